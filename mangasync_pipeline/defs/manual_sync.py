"""Manual syncs asked for over HTTP become `sync_manga_job` runs, visible in the UI like any run.

The notification server only records a request (`manual_sync_requests`); this sensor requests
one run per request (the run key makes a repeated tick harmless) and copies the run's id and
outcome back, so `GET /api/sync-requests/{id}` can say where to follow it.
"""

from __future__ import annotations

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    RunConfig,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    definitions,
    sensor,
)
from sqlalchemy import bindparam, select, update

from mangasync_pipeline.config import Settings, utcnow
from mangasync_pipeline.db.tables import manga, manual_sync_requests
from mangasync_pipeline.defs.inflight import max_runtime_tags
from mangasync_pipeline.defs.jobs import REQUEST_TAG, SyncMangaConfig, sync_manga_job
from mangasync_pipeline.defs.resources import MangaHub, MangaHubDatabase
from mangasync_pipeline.defs.settings import current_settings
from mangasync_pipeline.sync.manga_sync import rating_refusal, refuse_requests

ACTIVE = ("pending", "requested", "running")
PER_TICK = 50  # requests looked at per tick: each costs one run-storage query

_FINISHED = {DagsterRunStatus.SUCCESS: "succeeded", DagsterRunStatus.FAILURE: "failed",
             DagsterRunStatus.CANCELED: "failed"}


def manual_sync(settings: Settings) -> SensorDefinition:
    """manual_sync_sensor; its runs' maximum runtime follows the rate limit and retry policy."""
    # One manga: its entity and both views of its whole feed, a few pages each.
    runtime = max_runtime_tags(20, settings.mangadex_rate_limit,
                               settings.mangadex_policy.failure_bound())

    @sensor(
        job=sync_manga_job,
        minimum_interval_seconds=10,
        default_status=DefaultSensorStatus.RUNNING,
        description="Turns manual sync requests recorded by the notification server "
                    "(POST /api/manga/{ref}/sync) into sync_manga_job runs and records each "
                    "run's id and outcome for the caller.",
    )
    def manual_sync_sensor(context: SensorEvaluationContext,
                           mangahub: MangaHub) -> SensorResult | SkipReason:
        return hand_over(context, mangahub, settings, runtime)

    return manual_sync_sensor


def hand_over(context: SensorEvaluationContext, mangahub: MangaHubDatabase, settings: Settings,
              runtime: dict[str, str]) -> SensorResult | SkipReason:
    """One tick: a run for each new request, each run's outcome back to its request."""
    engine = mangahub.engine_or_skip()
    if isinstance(engine, SkipReason):
        return engine
    r = manual_sync_requests
    with engine.connect() as conn:
        active = conn.execute(select(r.c.id, r.c.mangadex_id, r.c.status, r.c.run_id,
                                     manga.c.id.label("catalogued"), manga.c.content_rating)
                              .outerjoin(manga, manga.c.mangadex_id == r.c.mangadex_id)
                              .where(r.c.status.in_(ACTIVE)).order_by(r.c.id)
                              .limit(PER_TICK)).all()
    if not active:
        return SkipReason("no manual sync requests waiting")
    requests: list[RunRequest] = []
    changes: list[dict[str, object]] = []
    for row in active:
        # A catalogued manga's stored rating answers without a run; one not catalogued yet
        # is refused by its run once MangaDex says how it is rated.
        refusal = rating_refusal(row.mangadex_id, row.content_rating, settings.content_ratings)
        if row.status == "pending" and row.catalogued is not None and \
                row.content_rating is not None and refusal:
            refuse_requests(engine, [row.id], refusal)
            context.log.info(f"manual sync request {row.id} refused: {refusal}")
            continue
        tags = {REQUEST_TAG: str(row.id)}
        runs = context.instance.get_runs(filters=RunsFilter(tags=tags), limit=1)
        if runs:
            run = runs[0]
            status = _FINISHED.get(run.status, "running")
            if status != row.status or run.run_id != row.run_id:
                error = f"run {run.run_id} ended {run.status.value}" if status == "failed" \
                    else None
                changes.append({"rid": row.id, "status": status, "run_id": run.run_id,
                                "error": error})
            continue
        requests.append(RunRequest(
            job_name=sync_manga_job.name, run_key=f"manual-sync:{row.id}",
            run_config=RunConfig(ops={"sync_one_manga": SyncMangaConfig(
                mangadex_id=row.mangadex_id)}),
            tags={**tags, "mangasync/trigger": "manual_sync_sensor", **runtime}))
        if row.status == "pending":
            changes.append({"rid": row.id, "status": "requested", "run_id": None,
                            "error": None})
    if changes:
        with engine.begin() as conn:
            # Only requests still open: a run may have closed one meanwhile (refused).
            conn.execute(update(r).where(r.c.id == bindparam("rid"), r.c.status.in_(ACTIVE))
                         .values(status=bindparam("status"), run_id=bindparam("run_id"),
                                 error=bindparam("error"), updated_at=utcnow()), changes)
    if requests:
        context.log.info(f"{len(requests)} manual sync request(s) handed to sync_manga_job: "
                         f"{[rq.tags[REQUEST_TAG] for rq in requests]}")
        return SensorResult(run_requests=requests)
    return SensorResult(skip_reason=SkipReason(
        f"{len(active)} manual sync request(s) in progress, none new"))


@definitions
def defs() -> Definitions:
    return Definitions(sensors=[manual_sync(current_settings())])
