"""A real HTTP receiver standing in for the notification server in sync tests.

It records every trigger it accepts and, like the real server, answers a repeated
`dedup_key` without recording it twice; `/notify/batch` answers per trigger. It can be switched
to fail (5xx) or to hang. `posts` counts triggers received (one per batch member), `requests`
the HTTP requests.
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
    requests: int = 0
    mode: str = "ok"  # ok, error, hang
    batch_route: bool = True  # False: answers /notify/batch like a server without it (404)
    _keys: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [body for k, body in self.accepted if k == kind]

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        batch = path == "/notify/batch"
        items = body.get("triggers", []) if batch else [{**body, "kind": path.rsplit("/", 1)[-1]}]
        with self._lock:
            self.requests += 1
            self.posts += len(items)
            mode = self.mode
        if mode == "hang":
            self._release.wait(30)
            return 503, {"error": "hanging"}
        if mode == "error":
            return 503, {"error": "failing on purpose"}
        results = []
        with self._lock:
            for item in items:
                kind = item.pop("kind")
                key = item.get("dedup_key")
                results.append({"result": "duplicate" if key in self._keys else "accepted"})
                if key not in self._keys:
                    self._keys.add(key)
                    self.accepted.append((kind, item))
        if batch:
            return 200, {"results": results}
        return 202, {"notification_ids": [], "recipients": 0, "online": 0}


def start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if not self.path.startswith("/notify/") or (
                    self.path == "/notify/batch" and not receiver.batch_route):
                self.send_response(404)  # not the server's JSON error: some other web server
                self.send_header("Content-Length", "9")
                self.end_headers()
                self.wfile.write(b"Not Found")
                return
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            status, answer = receiver.handle(self.path, body)
            payload = json.dumps(answer)
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
