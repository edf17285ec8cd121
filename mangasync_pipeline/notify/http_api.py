"""HTTP side of the notification server: triggers, health, metrics and the manual sync API."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mangasync_pipeline.config import Settings
from mangasync_pipeline.notify import triggers
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.store import NotifyStore, UnknownManga
from mangasync_pipeline.notify.udp import UdpEndpoint

log = logging.getLogger("mangasync.notify.http")

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_ACCEPTED = {
    "type": "object",
    "properties": {
        "notification_ids": {"type": "array", "items": {"type": "integer"}},
        "recipients": {"type": "integer"},
        "online": {"type": "integer"},
    },
    "required": ["notification_ids", "recipients", "online"],
}


BULK_ANALYZE = 1000  # recipients of one trigger after which table statistics are refreshed
_background_tasks: set[asyncio.Future[Any]] = set()


def _background(work: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(work)
    _background_tasks.add(task)
    task.add_done_callback(_background_tasks.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or log.warning(
        "refreshing statistics failed: %s", t.exception()))


@dataclass
class ServerContext:
    settings: Settings
    store: NotifyStore
    metrics: NotifyMetrics
    origin: str  # this process, so it can skip its own LISTEN/NOTIFY messages
    run_db: Callable[..., Awaitable[Any]]
    udp: UdpEndpoint | None = None


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _trigger_doc(kind: str) -> dict[str, Any]:
    return {
        "requestBody": {"required": True, **_json_content(triggers.schema(kind))},
        "responses": {
            "202": {"description": "stored, pushed to online users", **_json_content(_ACCEPTED)},
            "400": {"description": "malformed body", **_json_content(_ERROR)},
            "401": {"description": "missing or wrong bearer token", **_json_content(_ERROR)},
            "404": {"description": "unknown manga_id", **_json_content(_ERROR)},
            "413": {"description": "body over 64 KiB", **_json_content(_ERROR)},
        },
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(ctx: ServerContext) -> FastAPI:
    app = FastAPI(title="MangaHub notification server", version="1")

    def trigger_route(kind: str) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def route(request: Request) -> JSONResponse:
            response = await _trigger(ctx, kind, request)
            ctx.metrics.triggers.labels(kind, str(response.status_code)).inc()
            return response

        return route

    for path_kind, kind in triggers.KINDS.items():
        app.add_api_route(
            f"/notify/{path_kind}", trigger_route(kind), methods=["POST"], status_code=202,
            summary=f"Notify users of {kind}", response_model=None,
            openapi_extra=_trigger_doc(kind), name=f"notify_{kind.lower()}",
        )

    @app.get("/health")
    async def health() -> JSONResponse:
        body: dict[str, Any] = {"status": "ok", "database": "ok"}
        try:
            body.update(await ctx.run_db(ctx.store.health))
        except Exception as exc:
            body["database"] = " ".join(str(exc).split())[:300] or type(exc).__name__
            body["mangadex"] = {"breaker": "unknown", "opened_until": None}
            body["syncs"] = {}
        udp = ctx.udp
        body["udp"] = {"sessions": len(udp.sessions) if udp else 0,
                       "users_online": len(udp.online_user_ids()) if udp else 0}
        if (body["database"] != "ok" or body["mangadex"]["breaker"] == "open"
                or any(s["status"] == "error" for s in body["syncs"].values())):
            body["status"] = "degraded"
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics() -> Response:
        data = await ctx.run_db(ctx.metrics.render)
        return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/api/manga/{manga_ref}/sync")
    async def sync_manga(manga_ref: str) -> JSONResponse:
        try:
            from mangasync_pipeline.sync.manga_sync import sync_manga as run_sync
        except ImportError as exc:
            return _error(503, f"manual sync is not available: {exc}")
        try:
            # Not on the database threads: a sync waits on MangaDex for seconds, and hands
            # its notifications to this very server, whose triggers need those threads.
            report = await asyncio.to_thread(run_sync, ctx.settings, manga_ref)
        except LookupError as exc:
            return _error(404, str(exc) or f"unknown manga {manga_ref}")
        except Exception as exc:
            log.warning("manual sync of manga %s failed: %s", manga_ref, exc)
            return _error(502, " ".join(f"{type(exc).__name__}: {exc}".split())[:500])
        return JSONResponse(report)

    return app


def _authorised(ctx: ServerContext, request: Request) -> bool:
    token = ctx.settings.notify_trigger_token
    if not token:
        return True
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        value.strip().encode("utf-8", "replace"), token.encode("utf-8"))


async def _trigger(ctx: ServerContext, kind: str, request: Request) -> JSONResponse:
    if not _authorised(ctx, request):
        return _error(401, "missing or wrong Authorization: Bearer token")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > triggers.MAX_BODY:
        return _error(413, f"body over {triggers.MAX_BODY} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > triggers.MAX_BODY:
            return _error(413, f"body over {triggers.MAX_BODY} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _error(400, "body: not valid JSON")
    try:
        payload = triggers.validate(kind, body)
    except triggers.TriggerError as exc:
        return _error(400, str(exc))
    if not 0 < payload["manga_id"] <= triggers.MAX_ID:
        return _error(404, f"manga_id {payload['manga_id']} is not in the catalogue")
    udp = ctx.udp
    online_users = udp.online_user_ids() if udp else set()
    try:
        outcome = await ctx.run_db(ctx.store.create_trigger, kind, payload, online_users,
                                   ctx.origin)
    except UnknownManga as exc:
        return _error(404, str(exc))
    if outcome.replayed:
        log.info("trigger %s (%s, manga %s): dedup_key %r seen before, nothing new",
                 outcome.trigger_id, kind, payload["manga_id"], payload.get("dedup_key"))
    else:
        log.info("trigger %s (%s, manga %s): %d recipients, %d online", outcome.trigger_id,
                 kind, payload["manga_id"], outcome.response["recipients"],
                 outcome.response["online"])
        if udp is not None and outcome.notices:
            udp.deliver(outcome.notices)  # after commit: the rows are durable first
        if outcome.response["recipients"] >= BULK_ANALYZE:
            _background(ctx.run_db(ctx.store.refresh_statistics))
    return JSONResponse(outcome.response, status_code=202)
