"""A reader's UDP client, written from PROTOCOL.md: `NotificationClient` and `listen`.

Blocking and single-threaded on purpose: it is what `mangasync listen` runs, and what tests use
as a real client (with optional random loss of incoming datagrams).
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from typing import Any

from mangasync_pipeline.notify import protocol


class AuthFailed(RuntimeError):
    pass


def format_notification(msg: dict[str, Any]) -> str:
    """One readable line: time, type, title, chapter (its label when it has one), message.

    The title shows once: a message that already names it ("New manga: <title>") is enough.
    """
    created = str(msg.get("created_at", "")).replace("T", " ")
    title = str(msg.get("title", ""))
    message = str(msg.get("message") or "")
    parts = [created, f"{msg.get('type', '?'):<12}"]
    if not (title and title in message):
        parts.append(title)
    if msg.get("type") == "NEW_CHAPTER":
        label, chapter = msg.get("label"), msg.get("chapter")
        shown = label if isinstance(label, str) and label else chapter
        parts.append(f"ch. {shown}" if shown is not None else "(no chapter number)")
    if message:
        parts.append(f"- {message}" if len(parts) > 2 else message)
    parts.append(f"[#{msg.get('id')}]")
    return "  ".join(p for p in parts if p)


class NotificationClient:
    def __init__(self, host: str, port: int, user: str, token: str, *,
                 drop_rate: float = 0.0, send_drop_rate: float = 0.0, seed: int | None = None,
                 register_timeout: float = 3.0, source: str | None = None) -> None:
        self.server = (host, port)
        self.user = user
        self.token = token
        self.drop_rate = drop_rate  # simulated loss of incoming datagrams
        self.send_drop_rate = send_drop_rate  # and of outgoing ones
        self.rng = random.Random(seed)
        self.register_timeout = register_timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        if source is not None:  # a local address to send from (tests use 127.0.0.2 and up)
            self.sock.bind((source, 0))
        self.sock.connect(self.server)
        self.session: str | None = None
        self.cookie: str | None = None  # the server's proof that this address receives
        self._unacked: set[int] = set()
        self.heartbeat = 30.0
        self.unread_at_register = 0
        self.seen: set[int] = set()
        self.received: list[dict[str, Any]] = []  # each notification once, in arrival order
        self.duplicates = 0
        self.dropped = 0
        self.errors: list[dict[str, Any]] = []
        self.last_heard = time.monotonic()
        self.last_ping = 0.0
        self.registrations = 0

    @property
    def local_addr(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    # --- raw I/O --------------------------------------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        if self.send_drop_rate and self.rng.random() < self.send_drop_rate:
            return
        self.sock.send(protocol.encode(msg))

    def send_raw(self, data: bytes) -> None:
        self.sock.send(data)

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next datagram that is not dropped (by the simulated loss), or None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, BlockingIOError):
                return None
            except ConnectionRefusedError:  # ICMP from a server that is not there (yet)
                continue
            if self.drop_rate and self.rng.random() < self.drop_rate:
                self.dropped += 1
                continue
            msg = protocol.decode(data)
            if msg is not None:
                self.last_heard = time.monotonic()
                return msg

    # --- protocol -------------------------------------------------------------------------

    def register_message(self) -> dict[str, Any]:
        return protocol.register_message(self.user, self.token, cookie=self.cookie)

    def register(self, timeout: float | None = None, attempts: int = 5) -> dict[str, Any]:
        """REGISTER until REGISTERED; notifications that arrive meanwhile are handled.

        A server that has no proof yet that this address receives answers RETRY with a
        cookie: the REGISTER goes again at once with it (not counted as an attempt)."""
        timeout = self.register_timeout if timeout is None else timeout
        # Pushes that arrive before REGISTERED belong to the new session: ACK them under it
        # once it is known, not under the old one (ignored) or not at all (they stay unread).
        self.session = None
        for _ in range(attempts):
            self.send(self.register_message())
            retries = 0
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                msg = self.recv(left)
                if msg is None:
                    break
                if msg["type"] == "RETRY" and isinstance(msg.get("cookie"), str):
                    if retries < 3:  # a stale cookie is answered with a new one, once
                        retries += 1
                        self.cookie = msg["cookie"]
                        self.send(self.register_message())
                    continue
                if msg["type"] == "REGISTERED":
                    self.session = str(msg["session"])
                    self.heartbeat = float(msg.get("heartbeat", 30))
                    self.unread_at_register = int(msg.get("unread", 0))
                    self.registrations += 1
                    self.ping()  # proves this address receives: the catch-up starts now
                    self._ack_pending()
                    return msg
                if msg["type"] == "ERROR" and msg.get("code") == "AUTH_FAILED":
                    raise AuthFailed(f"server refused REGISTER of user {self.user!r}")
                self.handle(msg)
        raise TimeoutError(f"no answer to REGISTER from {self.server[0]}:{self.server[1]}")

    def handle(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Process one message; returns it if it is a notification seen for the first time."""
        kind = msg.get("type")
        if kind in protocol.NOTIFICATION_TYPES and type(msg.get("id")) is int:
            if self.session is not None:
                self.send({"type": "ACK", "session": self.session, "ids": [msg["id"]]})
            else:
                self._unacked.add(msg["id"])
            if msg["id"] in self.seen:
                self.duplicates += 1
                return None
            self.seen.add(msg["id"])
            self.received.append(msg)
            return msg
        if kind == "ERROR":
            self.errors.append(msg)
            if msg.get("code") == "SESSION_UNKNOWN":
                self.session = None  # the server restarted or expired us: register again
        return None

    def _ack_pending(self) -> None:
        pending = sorted(self._unacked)
        self._unacked.clear()
        for i in range(0, len(pending), 100):  # PROTOCOL.md: at most 100 ids per ACK
            self.send({"type": "ACK", "session": self.session, "ids": pending[i:i + 100]})

    def ping(self) -> None:
        if self.session is not None:
            self.send({"type": "PING", "session": self.session})
            self.last_ping = time.monotonic()

    def poll(self, duration: float,
             on_notification: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Receive for `duration` seconds, keeping the session alive; returns new notifications."""
        deadline = time.monotonic() + duration
        fresh = 0
        while (left := deadline - time.monotonic()) > 0:
            now = time.monotonic()
            if self.session is None or now - self.last_heard > 2.5 * self.heartbeat:
                # No session, or the server went quiet (restart): a new REGISTER.
                self.session = None
                try:
                    self.register(timeout=min(self.register_timeout, max(left, 0.1)), attempts=1)
                except TimeoutError:
                    continue
            if now - self.last_ping >= self.heartbeat / 3:
                self.ping()
            msg = self.recv(min(left, max(0.05, self.heartbeat / 3)))
            if msg is None:
                continue
            new = self.handle(msg)
            if new is not None:
                fresh += 1
                if on_notification is not None:
                    on_notification(new)
        return fresh

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Poll until `count` distinct notifications arrived (or timeout); returns them all."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and (left := deadline - time.monotonic()) > 0:
            self.poll(min(left, 0.2))
        return self.received

    def unregister(self, timeout: float = 1.0) -> bool:
        if self.session is None:
            return False
        self.send({"type": "UNREGISTER", "session": self.session})
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is not None and msg["type"] == "BYE":
                self.session = None
                return True
        self.session = None
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NotificationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
