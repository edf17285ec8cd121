"""`new_chapters_sensor`: chapters on readers' screens within a minute, without empty runs.

Every CHAPTER_SENSOR_INTERVAL (30 s) it asks MangaDex, in two cheap requests, whether chapters
of catalogued manga in the followed languages became readable since its cursor, and requests a
`new_chapters` run for that window only when some did. `new_chapters_schedule` stays as the
safety net (it reads everything since its own cursor, less often).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dagster import (
    DefaultSensorStatus,
    Definitions,
    RunConfig,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    definitions,
    sensor,
)

from mangasync_pipeline.bounds import CLOCK_SKEW
from mangasync_pipeline.config import Settings, utcnow
from mangasync_pipeline.defs.assets import NewChaptersConfig
from mangasync_pipeline.defs.inflight import run_in_flight
from mangasync_pipeline.defs.jobs import new_chapters_job
from mangasync_pipeline.defs.resources import (
    MangaDex,
    MangaDexResource,
    MangaHub,
    MangaHubDatabase,
)
from mangasync_pipeline.defs.schedules import poll_runtime
from mangasync_pipeline.defs.settings import current_settings
from mangasync_pipeline.mangadex.errors import MangaDexError
from mangasync_pipeline.sync.chapter_probe import ProbeCursor, probe_new_chapters
from mangasync_pipeline.sync.chapters import load_cursors

TRIGGER = "new_chapters_sensor"


def _start(context: SensorEvaluationContext, cursors: dict[str, datetime], now: datetime,
           lookback: timedelta) -> ProbeCursor:
    """The sensor's own cursor; on its first tick, where the chapter sync stands (at most a
    lookback ago: older gaps are the schedule's and the backfill's)."""
    own = ProbeCursor.decode(context.cursor)
    if own is not None:
        # A cursor an earlier version stored past now plus the skew waits for no one.
        return ProbeCursor({k: min(v, now) if v > now + CLOCK_SKEW else v
                            for k, v in own.since.items()})
    floor = (now - lookback).replace(microsecond=0)
    return ProbeCursor({k: max(cursors.get(k, floor), floor) for k in ProbeCursor.starting_at(
        now).since})


def chapters_sensor(settings: Settings) -> SensorDefinition:
    """new_chapters_sensor, every CHAPTER_SENSOR_INTERVAL."""

    @sensor(
        job=new_chapters_job,
        name=TRIGGER,
        minimum_interval_seconds=int(settings.chapter_sensor_interval.total_seconds()),
        default_status=DefaultSensorStatus.RUNNING,
        description="Asks MangaDex (two requests) whether chapters of catalogued manga in the "
                    "followed languages became readable since its cursor; requests a "
                    "new_chapters run for that window only when some did.",
    )
    def new_chapters_sensor(context: SensorEvaluationContext, mangahub: MangaHub,
                            mangadex: MangaDex) -> SensorResult | SkipReason:
        return probe(context, mangahub, mangadex, settings)

    return new_chapters_sensor


def probe(context: SensorEvaluationContext, mangahub: MangaHubDatabase,
          mangadex: MangaDexResource, settings: Settings) -> SensorResult | SkipReason:
    """One tick: probe MangaDex from the cursor, request runs for the windows with chapters."""
    engine = mangahub.engine_or_skip()
    if isinstance(engine, SkipReason):
        return engine
    now = utcnow().replace(microsecond=0)
    cursor = _start(context, load_cursors(engine), now, settings.chapter_lookback)
    try:
        found = probe_new_chapters(engine, mangadex.sensor_client(), settings.languages,
                                   cursor, now, hold_until=settings.chapter_lookback)
    except MangaDexError as exc:
        # The cursor is stored as it was, so an outage at the first tick does not slide it.
        return SensorResult(skip_reason=SkipReason(
            f"MangaDex not reachable, cursor kept at {cursor.earliest.isoformat()}: {exc}"),
            cursor=cursor.encode())
    new_cursor = (found.cursor or cursor).encode()
    if not found.new:
        return SensorResult(skip_reason=SkipReason(
            f"no new chapters since {cursor.earliest.isoformat()} ({found.seen} seen, "
            f"{found.requests} requests)"), cursor=new_cursor)

    requests: list[RunRequest] = []
    waiting: list[str] = []
    runtime = poll_runtime(settings)
    for partition, (since, count) in sorted(found.windows(settings.partitions_start).items()):
        in_flight = run_in_flight(context.instance, new_chapters_job.name,
                                  partition_key=partition)
        if in_flight is not None:
            waiting.append(f"run {in_flight.run_id} ({in_flight.status.value}) for {partition}")
            continue
        requests.append(RunRequest(
            partition_key=partition,
            run_config=RunConfig(ops={"new_chapters": NewChaptersConfig(
                since=since.isoformat())}),
            # A window's run is a poll's work at most: the same maximum runtime.
            tags={"mangasync/trigger": TRIGGER, "mangasync/chapters": str(count),
                  "mangasync/since": since.isoformat(), **runtime},
        ))
    context.log.info(f"{len(found.new)} new chapters ({', '.join(found.ids()[:5])}"
                     f"{'...' if len(found.new) > 5 else ''}) in {found.requests} requests; "
                     f"{len(requests)} runs requested"
                     + (f"; waiting on {'; '.join(waiting)}" if waiting else ""))
    if not requests:
        # The cursor holds at the chapters until they are stored: the next tick after that
        # run sees them again if it did not store them.
        return SensorResult(skip_reason=SkipReason(
            f"{len(found.new)} new chapters, but a run is in flight: {'; '.join(waiting)}"),
            cursor=new_cursor)
    return SensorResult(run_requests=requests, cursor=new_cursor)


@definitions
def defs() -> Definitions:
    return Definitions(sensors=[chapters_sensor(current_settings())])
