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
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from mangasync_pipeline.bounds import CLOCK_SKEW
from mangasync_pipeline.config import utcnow
from mangasync_pipeline.defs.assets import NewChaptersConfig
from mangasync_pipeline.defs.inflight import run_in_flight
from mangasync_pipeline.defs.jobs import new_chapters_job
from mangasync_pipeline.defs.resources import MangaDexResource, MangaHubDatabase, SyncSettings
from mangasync_pipeline.defs.schedules import POLL_RUNTIME
from mangasync_pipeline.defs.settings import SETTINGS
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


@sensor(
    job=new_chapters_job,
    name=TRIGGER,
    minimum_interval_seconds=int(SETTINGS.chapter_sensor_interval.total_seconds()),
    default_status=DefaultSensorStatus.RUNNING,
    description="Asks MangaDex (two requests) whether chapters of catalogued manga in the "
                "followed languages became readable since its cursor; requests a new_chapters "
                "run for that window only when some did.",
)
def new_chapters_sensor(context: SensorEvaluationContext, mangahub: MangaHubDatabase,
                        mangadex: MangaDexResource,
                        sync_settings: SyncSettings) -> SensorResult | SkipReason:
    engine = mangahub.engine_or_skip()
    if isinstance(engine, SkipReason):
        return engine
    now = utcnow().replace(microsecond=0)
    cursor = _start(context, load_cursors(engine), now, sync_settings.lookback)
    try:
        probe = probe_new_chapters(engine, mangadex.sensor_client(),
                                   sync_settings.language_list, cursor, now,
                                   hold_until=sync_settings.lookback)
    except MangaDexError as exc:
        # The cursor is stored as it was, so an outage at the first tick does not slide it.
        return SensorResult(skip_reason=SkipReason(
            f"MangaDex not reachable, cursor kept at {cursor.earliest.isoformat()}: {exc}"),
            cursor=cursor.encode())
    new_cursor = (probe.cursor or cursor).encode()
    if not probe.new:
        return SensorResult(skip_reason=SkipReason(
            f"no new chapters since {cursor.earliest.isoformat()} ({probe.seen} seen, "
            f"{probe.requests} requests)"), cursor=new_cursor)

    requests: list[RunRequest] = []
    waiting: list[str] = []
    for partition, (since, count) in sorted(probe.windows(SETTINGS.partitions_start).items()):
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
                  "mangasync/since": since.isoformat(), **POLL_RUNTIME},
        ))
    context.log.info(f"{len(probe.new)} new chapters ({', '.join(probe.ids()[:5])}"
                     f"{'...' if len(probe.new) > 5 else ''}) in {probe.requests} requests; "
                     f"{len(requests)} runs requested"
                     + (f"; waiting on {'; '.join(waiting)}" if waiting else ""))
    if not requests:
        # The cursor holds at the chapters until they are stored: the next tick after that
        # run sees them again if it did not store them.
        return SensorResult(skip_reason=SkipReason(
            f"{len(probe.new)} new chapters, but a run is in flight: {'; '.join(waiting)}"),
            cursor=new_cursor)
    return SensorResult(run_requests=requests, cursor=new_cursor)
