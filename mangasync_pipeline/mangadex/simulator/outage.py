"""`OutageProxy`: a TCP front for the simulator that can go down the ways MangaDex does.

- `up`: bytes pass through to the simulator.
- `hang`: connections are accepted and read, and never answered.
- `refused`: nothing listens on the port (the client gets ECONNREFUSED).

Every change of mode cuts the connections open at the time, as a restart of the real service
would, so a client's keep-alive connection meets the new mode on its next request. The port
stays the same across modes, so a client configured once sees MangaDex come back.

`with OutageProxy(sim.url) as proxy: proxy.set_mode("hang")`; `proxy.url` is what the client
uses. HTTP-level faults (a storm of 503s) are the simulator's own `/_sim/faults`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["up", "hang", "refused"]


class OutageProxy:
    def __init__(self, upstream_url: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.host = host
        self.port = port
        self.mode: Mode = "up"
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self.accepted = 0  # connections taken, in any mode: "did the client try at all?"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> OutageProxy:
        self._listen()
        return self

    def stop(self) -> None:
        self._close_listener()
        self._cut_all()

    def __enter__(self) -> OutageProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_mode(self, mode: Mode) -> None:
        if mode not in ("up", "hang", "refused"):
            raise ValueError(f"unknown outage mode {mode!r} (up, hang or refused)")
        with self._lock:
            self.mode = mode
        self._cut_all()
        if mode == "refused":
            self._close_listener()
        elif self._listener is None:
            self._listen()

    # -- sockets ------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="outage-proxy",
                         daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _cut_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.update(socks)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed: refused mode or stop()
            self._track(conn)
            with self._lock:
                mode = self.mode
                self.accepted += 1
            if mode == "hang":
                threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            self._track(upstream)
            threading.Thread(target=self._pump, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()

    @staticmethod
    def _swallow(conn: socket.socket) -> None:
        """Read whatever the client sends and never answer, until the connection is cut."""
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
