"""A real HTTP receiver standing in for the notification server in sync tests.

It records every trigger it accepts and, like the real server, answers a repeated
`dedup_key` without recording it twice. It can be switched to fail (5xx) or to hang.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Receiver:
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    posts: int = 0
    mode: str = "ok"  # ok, error, hang
    _keys: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [body for k, body in self.accepted if k == kind]

    def handle(self, path: str, body: dict[str, Any]) -> int:
        with self._lock:
            self.posts += 1
            mode = self.mode
        if mode == "hang":
            self._release.wait(30)
            return 503
        if mode == "error":
            return 503
        with self._lock:
            key = body.get("dedup_key")
            if key not in self._keys:
                self._keys.add(key)
                self.accepted.append((path.rsplit("/", 1)[-1], body))
        return 202


def start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if not self.path.startswith("/notify/"):
                self.send_response(404)  # not the server's JSON error: some other web server
                self.send_header("Content-Length", "9")
                self.end_headers()
                self.wfile.write(b"Not Found")
                return
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            status = receiver.handle(self.path, body)
            payload = json.dumps({"notification_ids": [], "recipients": 0, "online": 0})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload.encode())

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec, server = start_receiver()
    yield rec
    rec._release.set()
    server.shutdown()
    server.server_close()
