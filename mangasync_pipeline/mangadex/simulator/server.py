"""The HTTP face of the simulator: MangaDex endpoints, `/_sim/` admin, and `Simulator`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import render
from .catalogue import Catalogue
from .live import LivePublisher
from .params import (
    UUID_RE,
    ApiError,
    Params,
    chapter_query,
    manga_includes,
    manga_list_query,
    not_found,
)
from .records import Manga, iso, parse_iso
from .traffic import Faults, RateLimiter, Stats

_MANGA_RE = re.compile(r"^/manga/([^/]+)$")
_FEED_RE = re.compile(r"^/manga/([^/]+)/feed$")
_SIM_MANGA_RE = re.compile(r"^/_sim/manga/([^/]+)$")
_JSON = "application/json"
_MALFORMED = b'{"result":"ok","data":"oops"}'

Response = tuple[int, bytes, str]


def _timestamp(value: dt.datetime | str | float | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    return parse_iso(value)


class Simulator:
    """A seeded MangaDex on a loopback port, served from a background thread.

    `with Simulator(seed=1, manga_count=300, rate_limit=None) as sim: httpx.get(sim.url)`
    """

    def __init__(
        self,
        seed: int = 42,
        manga_count: int = 5000,
        rate_limit: float | None = 5.0,
        host: str = "127.0.0.1",
        port: int = 0,
        chapters_per_manga: float = 20.0,
        start: dt.datetime | str | float | None = None,
        end: dt.datetime | str | float | None = None,
        publish_every: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.offset_seconds = 0.0
        self.catalogue = Catalogue(
            seed=seed, manga_count=manga_count, chapters_per_manga=chapters_per_manga,
            start=_timestamp(start), end=_timestamp(end), clock=self.now,
        )
        self.limiter = RateLimiter(rate_limit)
        self.stats = Stats()
        self.faults = Faults(seed)
        self.publish_every = publish_every or None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._live: LivePublisher | None = None

    def now(self) -> float:
        """The simulator's clock: real UTC time plus the adjustable offset."""
        return time.time() + self.offset_seconds

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Simulator:
        self._server = _Server((self.host, self.port), _Handler, self)
        # A short poll interval keeps stop() (and so every test teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="mangadex-simulator", daemon=True)
        self._thread.start()
        if self.publish_every:
            self._live = LivePublisher(self.catalogue, self.publish_every)
            self._live.start()
        return self

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the CLI)."""
        if self._server is None:
            self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> Simulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- MangaDex endpoints ------------------------------------------------------------------
    def route(self, path: str) -> str | None:
        if path in ("/manga", "/chapter", "/ping", "/manga/tag"):
            return path
        if _FEED_RE.match(path):
            return "/manga/{id}/feed"
        if _MANGA_RE.match(path):
            return "/manga/{id}"
        return None

    def answer(self, endpoint: str | None, path: str, params: Params,
               bad_item: bool) -> Response:
        """The undisturbed MangaDex answer; `bad_item` asks for one broken list item."""
        cat = self.catalogue
        if endpoint is None:
            raise not_found(f"No route found for \"GET {path}\"")
        if endpoint == "/ping":
            return 200, b"pong", "text/plain"
        if endpoint == "/manga/tag":
            return 200, render.tag_list_body(), _JSON
        if endpoint == "/manga":
            mq = manga_list_query(params)
            with cat.lock:
                items, total = cat.query_manga(mq)
                texts = [render.manga_json(m, mq.includes, cat.manga) for m in items]
            return 200, self._page(texts, mq.limit, mq.offset, total, bad_item), _JSON
        if endpoint == "/manga/{id}":
            m_id = _MANGA_RE.match(path).group(1)  # type: ignore[union-attr]
            includes = manga_includes(params)
            with cat.lock:
                m = cat.manga.get(m_id.lower()) if UUID_RE.match(m_id) else None
                if m is None:
                    raise not_found(f"Manga `{m_id}` not found.")
                return 200, render.entity_body(render.manga_json(m, includes, cat.manga)), _JSON
        # chapters: /chapter or /manga/{id}/feed
        feed_match = _FEED_RE.match(path)
        feed_id = feed_match.group(1).lower() if feed_match else None
        cq = chapter_query(params, feed=feed_id is not None)
        with cat.lock:
            chapters, total = cat.query_chapters(cq, manga_id=feed_id,
                                                 shuffle=self.faults.take_shuffle())
            texts = [render.chapter_json(c, cq.includes) for c in chapters]
        return 200, self._page(texts, cq.limit, cq.offset, total, bad_item), _JSON

    def _page(self, texts: list[bytes], limit: int, offset: int, total: int,
              bad_item: bool) -> bytes:
        if bad_item and texts:
            kind = self.faults.take_bad_item()
            if kind is not None:
                mid = len(texts) // 2
                texts[mid] = render.broken_item(texts[mid], kind)
        return render.collection_body(texts, limit, offset, total)

    # -- admin -------------------------------------------------------------------------------
    def admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        cat = self.catalogue
        if path == "/_sim/stats" and method == "GET":
            return 200, self.stats.snapshot()
        if path == "/_sim/stats/reset" and method == "POST":
            self.stats.reset()
            return 200, self.stats.snapshot()
        if path == "/_sim/clock":
            if method == "POST":
                if not isinstance(body, dict) or "offset_seconds" not in body:
                    raise ValueError("body must be {\"offset_seconds\": N}")
                self.offset_seconds = float(body["offset_seconds"])
            return 200, {"offset_seconds": self.offset_seconds, "now": iso(int(self.now()))}
        if path == "/_sim/faults":
            if method == "POST":
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object of faults")
                return 200, self.faults.set(body)
            if method == "DELETE":
                self.faults.clear()
            return 200, self.faults.snapshot()
        if path == "/_sim/manga" and method == "POST":
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            made = cat.add_manga(body)
            out: dict[str, Any] = {"ids": [m.id for m in made]}
            if len(made) == 1 and "count" not in body:
                out["manga"] = self._record(made[0])["manga"]
            return 201, out
        if path == "/_sim/chapters" and method == "POST":
            specs = body.get("chapters") if isinstance(body, dict) else body
            if not isinstance(specs, list):
                raise ValueError("body must be a list of chapters or {\"chapters\": [...]}")
            return 201, {"ids": [c.id for c in cat.add_chapters(specs)]}
        m = _SIM_MANGA_RE.match(path)
        if m:
            mid = m.group(1)
            if method == "GET":
                with cat.lock:
                    rec = cat.manga.get(mid.lower())
                    if rec is None:
                        raise KeyError(mid)
                    return 200, self._record(rec)
            if method == "PATCH":
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                with cat.lock:
                    return 200, self._record(cat.update_manga(mid, body))
            if method == "DELETE":
                cat.remove_manga(mid)
                return 200, {"removed": mid}
        return 404, {"error": f"no admin route {method} {path}"}

    def _record(self, m: Manga) -> dict[str, Any]:
        """Everything the simulator holds for a manga, future and external chapters too."""
        with self.catalogue.lock:
            includes = frozenset(("author", "artist", "cover_art", "creator"))
            manga = json.loads(render.manga_json(m, includes, self.catalogue.manga))
            chapters = [json.loads(render.chapter_json(c, frozenset(("scanlation_group",))))
                        for c in sorted(m.chapters, key=lambda c: (c.created_at, c.id))]
        return {"manga": manga, "chapters": chapters}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr: tuple[str, int], handler: type[_Handler], sim: Simulator) -> None:
        self.sim = sim
        super().__init__(addr, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return "MangaDex"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a benchmark's worth of access lines would drown test output

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        raw = self._read_body()
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        if path.startswith("/_sim/"):
            self._admin(method, path, raw)
        else:
            self._mangadex(method, path, parts.query)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None,
              length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("X-Request-Id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _admin(self, method: str, path: str, raw: bytes) -> None:
        sim = self.server.sim
        try:
            body = json.loads(raw) if raw.strip() else None
            status, payload = sim.admin(method, path, body)
        except KeyError as exc:
            status, payload = 404, {"error": f"not found: {exc.args[0]}"}
        except (ValueError, TypeError) as exc:
            status, payload = 400, {"error": str(exc)}
        self._send(status, json.dumps(payload).encode(), _JSON)

    def _mangadex(self, method: str, path: str, query: str) -> None:
        sim = self.server.sim
        endpoint = sim.route(path)
        mono = time.monotonic()
        if sim.faults.take_drop():
            sim.stats.arrived(endpoint or "other", mono)
            sim.stats.answered("dropped")
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        sim.stats.arrived(endpoint or "other", mono)
        wait = sim.limiter.check(self.client_address[0], mono)
        if wait is not None:
            self._too_many(wait)
            return
        decision = sim.faults.decide()
        if decision.burst_429:
            self._too_many(float(max(1, decision.retry_after)))
            return
        if decision.error_status is not None:
            st = decision.error_status
            self._finish(st, render.error_body(st, "internal_server_error",
                                               "Simulated server error"), _JSON)
            return
        if decision.latency_ms:
            time.sleep(decision.latency_ms / 1000)
        if not (self.headers.get("User-Agent") or "").strip():
            # MangaDex answers this one outside its JSON envelope.
            self._finish(400, b"You must set an appropriate User-Agent header", "text/plain")
            return
        try:
            if method != "GET":
                raise ApiError(405, "method_not_allowed_http_exception",
                               f"No route found for \"{method} {path}\": Method Not Allowed")
            params = Params(parse_qsl(query, keep_blank_values=True))
            status, body, ctype = sim.answer(endpoint, path, params, bad_item=True)
        except ApiError as err:
            status, body, ctype = err.status, render.error_body(
                err.status, err.title, err.detail), _JSON
        if decision.malformed:
            body, ctype = _MALFORMED, _JSON
        if decision.truncated:
            body = body[: len(body) // 2]
        if decision.hostile is not None:
            self._hostile(decision, status, body, ctype)
            return
        self._finish(status, body, ctype)

    def _hostile(self, decision: Any, status: int, body: bytes, ctype: str) -> None:
        """A body no client should take whole: too big, a gzip bomb, or dripped."""
        self.server.sim.stats.answered(status)
        self.close_connection = True
        with contextlib.suppress(OSError):
            if decision.hostile == "drip":
                self._send(status, b"", ctype, length=len(body))
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(decision.drip_ms / 1000)
            elif decision.hostile == "gzip_bomb":
                bomb = render.gzip_bomb(decision.size_mb)
                self._send(status, bomb, ctype, {"Content-Encoding": "gzip"})
            else:
                size = decision.size_mb * 1024 * 1024
                chunk = b"[" + b"0," * (1024 * 1024 // 2 - 1) + b"0]"
                prefix = b'{"result":"ok","response":"collection","data":'
                # No Content-Length: the body runs until the connection closes, so only
                # counting what arrives can stop it.
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(prefix)
                sent = 0
                while sent < size:  # streamed: the simulator never holds the body
                    piece = chunk[: size - sent]
                    self.wfile.write(piece)
                    sent += len(piece)
                self.wfile.write(b"}")

    def _finish(self, status: int, body: bytes, ctype: str,
                headers: dict[str, str] | None = None) -> None:
        self.server.sim.stats.answered(status)
        self._send(status, body, ctype, headers)

    def _too_many(self, wait: float) -> None:
        limit = self.server.sim.limiter.limit or 5
        headers = {
            "X-RateLimit-Limit": str(int(limit) if float(limit).is_integer() else limit),
            "X-RateLimit-Remaining": "0",
            # MangaDex sends a UNIX timestamp here, not a delay.
            "X-RateLimit-Retry-After": str(math.ceil(time.time() + wait)),
            "Retry-After": str(max(1, math.ceil(wait))),
        }
        body = render.error_body(429, "too_many_requests_http_exception",
                                 "You are being rate limited. Slow down.")
        self._finish(429, body, _JSON, headers)
