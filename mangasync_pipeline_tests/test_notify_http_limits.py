"""HTTP under slow and piled-up clients, and hostile paths: `/health` and triggers keep
answering, every error is the documented `{"error": ...}` with a 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import resource
import socket
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import Engine

from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.testing import add_manga, fast_options, server_settings
from mangasync_pipeline.ops.system import free_port
from mangasync_pipeline.tls import tls_context
from mangasync_pipeline_tests import web

SLOW_HEADER = b"GET /health HTTP/1.1\r\nHost: mangahub\r\nX-Slow: "  # never finished


def _from(address: str, timeout: float = 3.0) -> httpx.Client:
    """An HTTP client on another loopback address: not one of the slow clients."""
    transport = httpx.HTTPTransport(local_address=address, verify=tls_context())
    return web.Client(transport=transport, timeout=timeout)


def _slow_clients(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", port))
            sock.send(SLOW_HEADER)
        except OSError:
            pass  # reset by the server: it keeps nothing of this one
        held.append(sock)
    return held


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_health_and_triggers_answer_while_thousands_of_slow_clients_are_connected(
        db_url: str, engine: Engine) -> None:
    """The deployed command, with a file limit of 1,024: 3,000 connections that never finish
    their headers (more than the process could hold) from one address."""
    manga_id = add_manga(engine)
    http_port, udp_port = free_port(), free_port(kind=socket.SOCK_DGRAM)
    env = {**os.environ, "DATABASE_URL": db_url, "MANGASYNC_HTTP_PORT": str(http_port),
           "MANGASYNC_UDP_PORT": str(udp_port), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "mangasync_pipeline.cli", "server"],
                              env=env, stderr=subprocess.DEVNULL, preexec_fn=_limit_files)
    held: list[socket.socket] = []
    base = f"http://127.0.0.1:{http_port}"
    try:
        with _from("127.0.0.2", 1.0) as probe:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if probe.get(f"{base}/health").status_code == 200:
                        break
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        held = _slow_clients(http_port, 3000)
        with _from("127.0.0.2") as probe:
            for _ in range(5):
                started = time.monotonic()
                assert probe.get(f"{base}/health").status_code == 200
                assert time.monotonic() - started < 2.0
            r = probe.post(f"{base}/notify/new-manga", json={"manga_id": manga_id,
                                                              "title": "Still here"})
            assert r.status_code == 202, r.text
    finally:
        for sock in held:
            sock.close()
        server.terminate()
        server.wait(30)


def test_headers_that_never_end_are_cut_off_and_idle_keep_alive_is_kept(
        db_url: str) -> None:
    options = fast_options(http_header_timeout=0.5)
    with ServerHandle(server_settings(db_url), options) as server:
        port = server.server.http_port
        [slow] = _slow_clients(port, 1)
        slow.settimeout(3.0)
        started = time.monotonic()
        assert slow.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 2.0
        slow.close()
        with socket.create_connection(("127.0.0.1", port), timeout=3.0) as conn:
            request = b"GET /health HTTP/1.1\r\nHost: mangahub\r\n\r\n"
            for _ in range(2):  # idle between requests for longer than the header deadline
                conn.send(request)
                assert conn.recv(65536).startswith(b"HTTP/1.1 200")
                time.sleep(1.0)


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/sync-requests/" + "9" * 30),
    ("GET", "/api/sync-requests/-1"),
    ("GET", "/api/sync-requests/abc"),
    ("POST", "/api/manga/%00/sync"),
    ("POST", "/api/manga/%C2%B2/sync"),
    ("POST", "/api/manga/" + "x" * 300 + "/sync"),
    ("GET", "/no/such/path"),
    ("GET", "/notify/new-manga"),
    ("DELETE", "/health"),
])
def test_hostile_paths_get_a_json_error_with_a_4xx(
        server: ServerHandle, method: str, path: str) -> None:
    r = web.request(method, f"{server.http_url}{path}")
    assert 400 <= r.status_code < 500, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body


class _Plain(asyncio.Protocol):
    """The least a protocol uvicorn would use has: what the guard reads of it."""

    cycle = None
    transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


class _Peer(asyncio.Transport):
    """A connection from `host`, as asyncio's transport describes it (loopback has no other
    IPv6 addresses than ::1)."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host, self.aborted = host, False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.host, 50000, 0, 0) if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


def test_connections_from_one_ipv6_64_share_one_addresss_slots() -> None:
    from mangasync_pipeline.notify.http_guard import guarded

    async def refused() -> list[bool]:
        protocol = guarded(_Plain, per_client=4, header_timeout=60.0, total=100)
        peers = [_Peer(f"2001:db8:0:7::{n:x}") for n in range(1, 7)]
        peers.append(_Peer("2001:db8:0:8::1"))  # another subscriber
        held = []
        for peer in peers:
            held.append(protocol())
            held[-1].connection_made(peer)
        for each in held:
            each._disarm()
        return [peer.aborted for peer in peers]

    assert asyncio.run(refused()) == [False] * 4 + [True] * 2 + [False]


def _answer(sock: socket.socket) -> bytes:
    """One whole answer (headers and body may come in two segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    while length and len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _idle_from(address: str, port: int) -> socket.socket:
    """A kept-alive connection from `address` that has had its answer and sends no more."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(3.0)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    sock.send(b"GET /health HTTP/1.1\r\nHost: mangahub\r\n\r\n")
    assert _answer(sock).startswith(b"HTTP/1.1 200")
    return sock


def _served(address: str, port: int) -> bool:
    """Whether a new connection from `address` gets an answer (not a reset or a close). It
    is then closed, and the server is done with it when this returns: the server's close
    (its FIN) comes after it stopped counting the connection."""
    try:
        with _idle_from(address, port) as sock:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5.0)
            while sock.recv(100):
                pass
            return True
    except (OSError, AssertionError):
        return False


def _closes(sock: socket.socket, within: float = 5.0) -> bool:
    """Whether the server closes `sock` (every answer on it was read whole before)."""
    sock.settimeout(within)
    try:
        while sock.recv(100):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _stays_open(sock: socket.socket) -> bool:
    # A close is sent before the newcomer that caused it is answered, and that answer is in.
    return not _closes(sock, within=0.3)


def test_idle_kept_alive_connections_make_room_for_new_ones(db_url: str) -> None:
    """Idle kept-alive connections (an answer had, nothing sent since) held up to the limits
    no longer keep a newcomer out: the oldest idle one is closed instead. A connection that
    is busy sending its request is never the one closed, and a newcomer that is refused
    anyway costs nobody a connection."""
    options = fast_options(http_connections_per_client=3, http_connections_total=5)
    with ServerHandle(server_settings(db_url), options) as server:
        port = server.server.http_port
        idle = [_idle_from("127.0.0.5", port) for _ in range(3)]
        assert _served("127.0.0.5", port)  # its own fourth: its oldest idle one goes
        assert _closes(idle[0]) and _stays_open(idle[1]) and _stays_open(idle[2])
        held = [_idle_from("127.0.0.6", port) for _ in range(3)]  # five open in all
        assert _served("127.0.0.7", port)  # someone else: the oldest idle connection goes
        assert _closes(idle[1]) and all(_stays_open(s) for s in [idle[2], *held])
        # 127.0.0.8 fills its three slots with requests whose headers never end: busy. At
        # the total, the second and the third take the two oldest idle slots.
        busy = [socket.create_connection(("127.0.0.1", port), timeout=3.0,
                                         source_address=("127.0.0.8", 0)) for _ in range(3)]
        for sock in busy:
            sock.send(SLOW_HEADER)
        assert _closes(idle[2]) and _closes(held[0])
        assert not _served("127.0.0.8", port)  # its own slots are busy: refused, and...
        assert _stays_open(held[1]) and _stays_open(held[2])  # ...it costs no one
        assert all(_stays_open(s) for s in busy)  # the busy ones are never chosen
        for sock in idle + held + busy:
            sock.close()


def test_a_connection_with_the_start_of_its_next_request_is_not_idle(db_url: str) -> None:
    """A pipelined request whose headers are still coming is kept, whatever a newcomer of its
    source needs, and then answered."""
    options = fast_options(http_connections_per_client=1)
    with ServerHandle(server_settings(db_url), options) as server:
        port = server.server.http_port
        with socket.create_connection(("127.0.0.1", port), timeout=3.0,
                                      source_address=("127.0.0.10", 0)) as sock:
            sock.send(b"GET /health HTTP/1.1\r\nHost: mangahub\r\n\r\n"
                      b"GET /health HTTP/1.1\r\nHo")
            assert _answer(sock).startswith(b"HTTP/1.1 200")
            assert not _served("127.0.0.10", port)
            sock.send(b"st: mangahub\r\n\r\n")
            assert _answer(sock).startswith(b"HTTP/1.1 200")


def test_a_websocket_upgrade_request_gives_its_slot_back(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The server has no WebSocket route; an upgrade request is an ordinary request (before,
    uvicorn swapped the connection to its WebSocket protocol and the slot was never given
    back: three of them locked their address out until a restart). Logged once a minute
    per source, not twice a request."""
    options = fast_options(http_connections_per_client=3)
    upgrade = (b"GET /health HTTP/1.1\r\nHost: mangahub\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    caplog.set_level(logging.WARNING)
    with ServerHandle(server_settings(db_url), options) as server:
        port = server.server.http_port
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=3.0,
                                          source_address=("127.0.0.9", 0)) as sock:
                sock.send(upgrade)
                assert _answer(sock).startswith(b"HTTP/1.1 ")
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(100):
                    pass
        assert _served("127.0.0.9", port)
    lines = [r.getMessage() for r in caplog.records if "pgrade" in r.getMessage()
             or "WebSocket" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.9" in lines[0], lines
