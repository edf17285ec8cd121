"""HTTP side of the notification server: triggers (one or a batch), manual sync requests,
health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from mangasync_pipeline.config import Settings
from mangasync_pipeline.notify import sync_requests, triggers
from mangasync_pipeline.notify.coalesce import TriggerWriter
from mangasync_pipeline.notify.gate import Gate
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.outage import (
    RETRY_AFTER,
    DatabaseDown,
    DatabaseStatus,
    is_outage,
)
from mangasync_pipeline.notify.statistics import StatisticsRefresh
from mangasync_pipeline.notify.store import (
    ACCEPTED,
    INVALID,
    UNKNOWN_MANGA,
    NotifyStore,
    TriggerOutcome,
)
from mangasync_pipeline.notify.udp import UdpEndpoint

log = logging.getLogger("mangasync.notify.http")

_PATH_KIND = {f"/notify/{path}": kind for path, kind in triggers.KINDS.items()}


@dataclass
class ServerContext:
    settings: Settings
    store: NotifyStore
    metrics: NotifyMetrics
    origin: str  # this process, so it can skip its own LISTEN/NOTIFY messages
    run_db: Callable[..., Awaitable[Any]]
    udp: UdpEndpoint | None = None
    database: DatabaseStatus | None = None  # set by create_app


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _unavailable(exc: DatabaseDown) -> JSONResponse:
    return _error(503, f"database unavailable, retry later: {exc}",
                  {"Retry-After": str(RETRY_AFTER)})


def _doc(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc("malformed body; the message names the field"),
    401: _doc("missing or wrong bearer token"),
    413: _doc("body too large"),
    503: _doc("database unreachable; retry after Retry-After seconds"),
}
_TRIGGER_ERRORS = {**_ERRORS, 404: _doc("unknown manga_id")}


def _body_limit(path: str) -> int:
    return triggers.MAX_BATCH_BODY if path == "/notify/batch" else triggers.MAX_BODY


def create_app(ctx: ServerContext) -> Gate:
    app = FastAPI(title="MangaHub notification server", version="3")
    status = ctx.database = DatabaseStatus(ctx.run_db, ctx.store.ping)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        kind = _PATH_KIND.get(request.url.path)
        if kind is not None:
            ctx.metrics.triggers.labels(kind, "400").inc()
        return _error(400, triggers.error_line(list(exc.errors()), skip=1))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Unknown paths, wrong methods: the documented {"error": ...}, not {"detail": ...}.
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return _error(500, "internal error; the server's log has the details")

    statistics = StatisticsRefresh(ctx.store, ctx.run_db)

    def push(outcomes: Sequence[TriggerOutcome], kinds: Sequence[str]) -> None:
        udp = ctx.udp
        for kind, outcome in zip(kinds, outcomes, strict=True):
            if outcome.result != ACCEPTED:
                continue
            if udp is not None and outcome.notices:
                udp.deliver(outcome.notices)  # after commit: the rows are durable first
            statistics.stored(outcome.response["recipients"])
            ctx.metrics.triggers.labels(kind, "202").inc()

    def online() -> set[int]:
        return ctx.udp.online_user_ids() if ctx.udp is not None else set()

    async def write(items: list[tuple[str, dict[str, Any]]]) -> list[TriggerOutcome]:
        result: list[TriggerOutcome] = await status.call(ctx.store.create_triggers, items,
                                                         online(), ctx.origin)
        return result

    writer = TriggerWriter(write)

    async def accept(kind: str, body: triggers.Trigger) -> JSONResponse:
        if not 0 < body.manga_id <= triggers.MAX_ID:
            ctx.metrics.triggers.labels(kind, "404").inc()
            return _error(404, f"manga_id {body.manga_id} is not in the catalogue")
        payload = body.payload()
        try:
            outcome = await writer.submit(kind, payload)
        except DatabaseDown as exc:
            ctx.metrics.triggers.labels(kind, "503").inc()
            return _unavailable(exc)
        if outcome.result == UNKNOWN_MANGA:
            ctx.metrics.triggers.labels(kind, "404").inc()
            return _error(404, outcome.response["error"])
        if outcome.replayed:
            ctx.metrics.triggers.labels(kind, "202").inc()
            log.info("trigger %s (%s, manga %s): dedup_key %r seen before, nothing new",
                     outcome.trigger_id, kind, payload["manga_id"], payload.get("dedup_key"))
        else:
            log.info("trigger %s (%s, manga %s): %d recipients, %d online", outcome.trigger_id,
                     kind, payload["manga_id"], outcome.response["recipients"],
                     outcome.response["online"])
            push([outcome], [kind])
        return JSONResponse(outcome.response, status_code=202)

    trigger_doc = {"status_code": 202, "responses": _TRIGGER_ERRORS, "response_model": None,
                   "response_description": "stored, pushed to online users: notification_ids, "
                                           "recipients, online"}

    @app.post("/notify/new-manga", summary="Notify every user of a new manga", **trigger_doc)
    async def notify_new_manga(body: triggers.NewManga) -> JSONResponse:
        return await accept("NEW_MANGA", body)

    @app.post("/notify/new-chapter", summary="Notify followers of a new chapter", **trigger_doc)
    async def notify_new_chapter(body: triggers.NewChapter) -> JSONResponse:
        return await accept("NEW_CHAPTER", body)

    @app.post("/notify/manga-update", summary="Notify followers of a manga update",
              **trigger_doc)
    async def notify_manga_update(body: triggers.MangaUpdate) -> JSONResponse:
        return await accept("MANGA_UPDATE", body)

    @app.post("/notify/batch", summary="Up to 500 triggers, stored in one transaction",
              responses=_ERRORS, response_model=None,
              response_description="one result per trigger, in order: accepted, duplicate, "
                                   "unknown manga or invalid")
    async def notify_batch(body: triggers.Batch) -> JSONResponse:
        results: list[dict[str, Any] | None] = []
        valid: list[tuple[int, str, dict[str, Any]]] = []
        outcomes: list[TriggerOutcome] = []
        for index, raw in enumerate(body.triggers):
            try:
                item = triggers.BATCH_ITEM.validate_python(raw)
            except ValidationError as exc:
                line = triggers.error_line(list(exc.errors()))
                results.append({"result": INVALID, "error": f"triggers.{index}.{line}"})
                continue
            kind = triggers.KINDS[item.kind]
            if not 0 < item.manga_id <= triggers.MAX_ID:
                results.append({"result": UNKNOWN_MANGA,
                                "error": f"manga_id {item.manga_id} is not in the catalogue"})
                continue
            results.append(None)
            valid.append((index, kind, item.payload()))
        if valid:
            try:
                outcomes = await status.call(ctx.store.create_triggers,
                                             [(k, p) for _, k, p in valid], online(), ctx.origin)
            except DatabaseDown as exc:
                return _unavailable(exc)
            push(outcomes, [k for _, k, _ in valid])
            for (index, _, _), outcome in zip(valid, outcomes, strict=True):
                results[index] = {"result": outcome.result, **outcome.response}
        for raw, result in zip(body.triggers, results, strict=True):
            assert result is not None
            if isinstance(raw.get("dedup_key"), str):
                result["dedup_key"] = raw["dedup_key"]
        counts: dict[str, int] = {}
        for result in results:
            assert result is not None
            counts[result["result"]] = counts.get(result["result"], 0) + 1
        stored = [o.trigger_id for o in outcomes if o.result == ACCEPTED]
        log.info("batch of %d triggers: %s; trigger ids %s to %s", len(results), counts,
                 stored[0] if stored else "-", stored[-1] if stored else "-")
        return JSONResponse({"results": results, "counts": counts})

    @app.get("/health", summary="Liveness and what the operator should know (no token)")
    async def health() -> JSONResponse:
        body: dict[str, Any] = {"status": "ok", "database": "ok"}
        try:
            body.update(await status.call(ctx.store.health))
        except DatabaseDown as exc:
            body["database"] = f"down: {exc}"
            body["mangadex"] = {"breaker": "unknown", "opened_until": None}
            body["syncs"] = {}
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

    @app.get("/metrics", summary="Prometheus metrics (NOTIFY_METRICS_TOKEN if set)")
    async def metrics() -> Response:
        data = await ctx.run_db(ctx.metrics.render)
        failure = ctx.metrics.database_error
        if failure is None:
            status.recovered()
        elif is_outage(failure):
            status.failed(failure)
        return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/api/manga/{manga_ref}/sync", status_code=202, response_model=None,
              summary="Ask for a sync of one manga (run by Dagster's sync_manga_job)",
              responses={**_ERRORS, 404: _doc("unknown manga"),
                         429: _doc("too many manual syncs from this caller")})
    async def sync_manga(manga_ref: str, request: Request) -> JSONResponse:
        caller = request.client.host if request.client else "unknown"
        try:
            recorded = await status.call(sync_requests.record, ctx.store.engine, manga_ref,
                                         caller)
        except DatabaseDown as exc:
            return _unavailable(exc)
        except sync_requests.TooManyRequests as exc:
            return _error(429, str(exc), {"Retry-After": str(exc.retry_after)})
        except LookupError as exc:
            return _error(404, str(exc))
        found = recorded.request
        follow = f"/api/sync-requests/{found['request_id']}"
        if recorded.created:
            log.info("manual sync request %s for manga %s (%s) from %s", found["request_id"],
                     found["manga_id"], found["mangadex_id"], caller)
        return JSONResponse({**found, "follow": follow, "new_request": recorded.created},
                            status_code=202, headers={"Location": follow})

    @app.get("/api/sync-requests/{request_id}", response_model=None,
             summary="A manual sync request: its status and its Dagster run id once launched",
             responses={404: _doc("no such request"), 503: _ERRORS[503]})
    async def sync_request(request_id: int) -> JSONResponse:
        if not 0 < request_id <= triggers.MAX_ID:
            return _error(404, f"no manual sync request {request_id}")
        try:
            found = await status.call(sync_requests.get, ctx.store.engine, request_id)
        except DatabaseDown as exc:
            return _unavailable(exc)
        if found is None:
            return _error(404, f"no manual sync request {request_id}")
        return JSONResponse(found)

    return Gate(app, token=ctx.settings.notify_trigger_token,
                metrics_token=ctx.settings.notify_metrics_token, body_limit=_body_limit)
