"""Sensors detect and hand work to runs; they never do the work (60 s tick limit)."""

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from dagster import (
    AssetObservation,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    MetadataValue,
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
from sqlalchemy import Engine, select

from mangasync_pipeline.config import Settings, utcnow
from mangasync_pipeline.db.tables import manga
from mangasync_pipeline.defs.assets import MANGA_CATALOGUE, CatalogueConfig
from mangasync_pipeline.defs.inflight import (
    UNSUCCESSFUL,
    describe_run,
    fresh_run_key,
    max_runtime_tags,
    run_in_flight,
)
from mangasync_pipeline.defs.jobs import (
    RefreshMangaConfig,
    catalogue_job,
    deliver_notifications_job,
    refresh_manga_job,
)
from mangasync_pipeline.defs.partitions import partition_of
from mangasync_pipeline.defs.resources import MangaDex, MangaDexResource, MangaHub, MangaHubDatabase
from mangasync_pipeline.defs.settings import current_settings
from mangasync_pipeline.mangadex.errors import MangaDexError
from mangasync_pipeline.sync import outbox, state
from mangasync_pipeline.sync.catalogue import PollCursor, detect_changes, start_cursor

SENSOR_TAG = {"mangasync/trigger": "new_manga_sensor"}
# How far back failed catalogue runs are looked at for manga still to catalogue.
RETRY_FAILED_FOR = timedelta(hours=24)
FAILING_SINCE_TAG = "mangasync/failing_since"
RETRY_WAIT_MAX = timedelta(hours=2)


def retry_wait(failures: int, interval: timedelta) -> timedelta:
    """How long after its last failed run a manga is asked for again: at once after the
    first failure (a passing fault), then a poll interval, doubling up to two hours, so work
    that keeps failing is not a failed run (and an alert) every tick for a day."""
    if failures <= 1:
        return timedelta(0)
    return min(interval * 2 ** (failures - 2), RETRY_WAIT_MAX)


@dataclass(frozen=True)
class Retry:
    """A manga that failed runs of this sensor left undone, due to be asked for again."""

    partition: str | None  # of its newest failed run (None for an unpartitioned job)
    # The newest failed run's start: the version the retry carries, so that each retry is a
    # new run key (a fixed one would repeat an earlier retry that succeeded, and the daemon
    # would drop it as a duplicate).
    failed_at: datetime
    failing_since: datetime  # the first failure of this streak, carried by retries' tags


class _Failure(NamedTuple):
    """A failed run naming a manga."""

    started: float  # when the run started (Unix time)
    since: float  # when that manga's streak of failures began
    partition: str | None


def _streak_starts(value: str | None) -> dict[str, float]:
    """The retried manga of a run and when each one's streak of failures began (the tag a
    retry carries: a run's other manga, fresh finds, began with the run itself)."""
    try:
        starts = json.loads(value) if value else {}
    except ValueError:
        return {}
    if not isinstance(starts, dict):
        return {}
    return {str(k): float(v) for k, v in starts.items() if isinstance(v, int | float)}


def _due_again(context: SensorEvaluationContext, job_name: str, op_name: str,
               poll_interval: timedelta) -> dict[str, Retry]:
    """The manga named by this sensor's runs of `job_name` that failed or were cancelled
    since the last run naming them succeeded, for less than a day, whose wait (`retry_wait`,
    by the failures since that success) is over.

    Their changes may be behind the cursor by now, where no scan finds them again. The failed
    runs are read first: with none (nearly every tick) that is one query returning nothing,
    and successes are read only from the oldest failure on."""
    moment = utcnow()
    now = moment.timestamp()
    window = RunsFilter(job_name=job_name, tags=SENSOR_TAG,
                        updated_after=moment - RETRY_FAILED_FOR, statuses=UNSUCCESSFUL)
    failures: dict[str, list[_Failure]] = defaultdict(list)
    for record in context.instance.get_run_records(window, limit=500):
        run = record.dagster_run
        started = record.create_timestamp.timestamp()
        starts = _streak_starts(run.tags.get(FAILING_SINCE_TAG))
        for mangadex_id in _ids_of(run, op_name):
            since = min(starts.get(mangadex_id, started), started)
            failures[mangadex_id].append(
                _Failure(started, since, run.tags.get("dagster/partition")))
    if not failures:
        return {}
    oldest = min(f.started for runs in failures.values() for f in runs)
    succeeded: dict[str, float] = {}  # id -> when a run naming it last started
    for record in context.instance.get_run_records(RunsFilter(
            job_name=job_name, tags=SENSOR_TAG, statuses=[DagsterRunStatus.SUCCESS],
            created_after=datetime.fromtimestamp(oldest, UTC)), limit=2000):
        started = record.create_timestamp.timestamp()
        for mangadex_id in _ids_of(record.dagster_run, op_name):
            succeeded[mangadex_id] = max(started, succeeded.get(mangadex_id, started))
    due: dict[str, Retry] = {}
    for mangadex_id, runs in failures.items():
        streak = [f for f in runs if f.started > succeeded.get(mangadex_id, 0.0)]
        if not streak:
            continue
        newest = max(streak, key=lambda f: f.started)
        since = min(f.since for f in streak)
        if now - since > RETRY_FAILED_FOR.total_seconds():
            continue  # a day of failed runs: given up (each of them was alerted)
        if now - newest.started >= retry_wait(len(streak), poll_interval).total_seconds():
            due[mangadex_id] = Retry(newest.partition,
                                     datetime.fromtimestamp(newest.started, UTC),
                                     datetime.fromtimestamp(since, UTC))
    return due


def _ids_of(run: DagsterRun, op_name: str) -> list[str]:
    config = (run.run_config or {}).get("ops", {}).get(op_name, {}).get("config", {})
    return list(config.get("mangadex_ids") or [])


def _left_by_failed_runs(context: SensorEvaluationContext, engine: Engine,
                         poll_interval: timedelta) -> tuple[dict[str, Retry], dict[str, Retry]]:
    """What failed runs of this sensor left undone: the manga its catalogue runs named that
    are still not catalogued (one a later run did not store was quarantined or is gone:
    asking again would not help); and the catalogued manga its refresh runs named, whose
    change may not be stored."""
    new = {i: r for i, r in _due_again(context, catalogue_job.name, "catalogue",
                                       poll_interval).items() if r.partition}
    changed = _due_again(context, refresh_manga_job.name, "refresh_manga", poll_interval)
    if not new and not changed:
        return {}, {}
    with engine.connect() as conn:
        stored = set(conn.execute(select(manga.c.mangadex_id).where(
            manga.c.mangadex_id.in_(sorted({*new, *changed})))).scalars())
    return ({i: r for i, r in new.items() if i not in stored},
            {i: r for i, r in changed.items() if i in stored})


def _retry_tags(ids: Iterable[str], retries: dict[str, Retry]) -> dict[str, str]:
    """When each retried manga's streak of failures began, kept across its retries (per
    manga: one time for the run would age a fresh find that shares it)."""
    starts = {i: int(retries[i].failing_since.timestamp()) for i in ids if i in retries}
    return {FAILING_SINCE_TAG: json.dumps(starts, separators=(",", ":"))} if starts else {}


def _requests_for(manga: int) -> int:
    # Re-reading manga costs one request per 100; a new manga's chapter baseline, up to two.
    return math.ceil(manga / 100) + 2 * manga


def manga_sensor(settings: Settings) -> SensorDefinition:
    """new_manga_sensor, every NEW_MANGA_POLL_INTERVAL (30 s at the least)."""

    @sensor(
        jobs=[catalogue_job, refresh_manga_job],
        minimum_interval_seconds=max(30, int(settings.new_manga_poll_interval.total_seconds())),
        default_status=DefaultSensorStatus.RUNNING,
        description="Asks MangaDex (one updatedAtSince keyset query) for manga created or "
                    "changed since its cursor; requests catalogue runs for the new ones' day "
                    "partitions and one refresh run for changed ones.",
    )
    def new_manga_sensor(context: SensorEvaluationContext, mangahub: MangaHub,
                         mangadex: MangaDex) -> SensorResult | SkipReason:
        return detect(context, mangahub, mangadex, settings)

    return new_manga_sensor


def detect(context: SensorEvaluationContext, mangahub: MangaHubDatabase,
           mangadex: MangaDexResource, settings: Settings) -> SensorResult | SkipReason:
    """One tick: new and changed manga since the cursor, as catalogue and refresh runs."""
    engine = mangahub.engine_or_skip()
    if isinstance(engine, SkipReason):
        return engine
    with engine.connect() as conn:
        initial = state.get_state(conn, state.INITIAL_SYNC)
        mirrored = state.get_state(conn, state.NEW_MANGA_POLL)
    # A run killed mid-way leaves "running" behind; after an hour it no longer holds us up.
    if initial and initial["status"] == "running" and initial["last_run_at"] and \
            utcnow() - initial["last_run_at"] < timedelta(hours=1):
        # Its cursor decides what counts as new: announcing before it lands would announce
        # manga the initial sync is importing right now.
        return SkipReason("initial sync running; new-manga detection waits for its cursor")
    # Its runs re-read what it found; while one is still on its way (MangaDex hanging, the
    # queue full) a new scan would only request the same work again.
    for job_name in (catalogue_job.name, refresh_manga_job.name):
        busy = run_in_flight(context.instance, job_name, tags=SENSOR_TAG)
        if busy is not None:
            return SkipReason(f"{describe_run(busy)}; detection waits for it")
    stored = (PollCursor.decode(context.cursor)
              or (PollCursor.decode(mirrored["last_cursor"]) if mirrored else None))
    cursor = stored or start_cursor(engine, utcnow())
    if stored is None:
        # The starting point is kept from the first tick on, so that ticks failing during an
        # outage at start-up do not slide the window past manga created meanwhile.
        with engine.begin() as conn:
            state.set_state(conn, state.NEW_MANGA_POLL, last_cursor=cursor.encode())
    try:
        detection = detect_changes(engine, mangadex.sensor_client(), cursor,
                                   content_ratings=settings.content_ratings)
    except MangaDexError as exc:
        state.mark_error(engine, state.NEW_MANGA_POLL, str(exc))
        return SensorResult(skip_reason=SkipReason(
            f"MangaDex not reachable, cursor kept at {cursor.since.isoformat()}: {exc}"),
            cursor=cursor.encode())
    by_partition: dict[str, list[str]] = {}
    for day, ids in detection.new_by_day.items():
        by_partition.setdefault(partition_of(day, settings), []).extend(ids)
    # The manga of a catalogue or refresh run that failed may be behind the cursor by now:
    # ask for them again, whatever the scan finds.
    left, changed = _left_by_failed_runs(context, engine, settings.new_manga_poll_interval)
    for mangadex_id, retry in sorted(left.items()):
        wanted = by_partition.setdefault(retry.partition or "", [])
        if mangadex_id not in wanted:
            wanted.append(mangadex_id)
            detection.versions.setdefault(mangadex_id, retry.failed_at)
    for mangadex_id, retry in sorted(changed.items()):
        if mangadex_id not in detection.updated:
            detection.updated.append(mangadex_id)
            detection.versions.setdefault(mangadex_id, retry.failed_at)
    for partition in sorted(by_partition):
        busy = run_in_flight(context.instance, catalogue_job.name, partition_key=partition)
        if busy is not None:
            # Another run of that day's catalogue (one started from the UI) is under way: keep
            # the cursor, the next tick finds these manga again and asks once it is done.
            return SensorResult(skip_reason=SkipReason(
                f"{describe_run(busy)}; cursor kept at {cursor.since.isoformat()}"),
                cursor=cursor.encode())
    budget = mangadex.rate_limit, mangadex.failure_bound()
    requests = []
    for partition, ids in sorted(by_partition.items()):
        requests.append(RunRequest(
            job_name=catalogue_job.name,
            partition_key=partition,
            # The digest covers (id, updatedAt): a later change of the same manga is a new run;
            # after a failed run the same manga are a new attempt, not a duplicate.
            run_key=fresh_run_key(context.instance,
                                  f"new-manga:{partition}:{detection.digest(ids)}"),
            run_config=RunConfig(ops={"catalogue": CatalogueConfig(
                mangadex_ids=sorted(ids), notify_new_manga=True)}),
            tags={**SENSOR_TAG, "mangasync/manga": str(len(ids)),
                  **max_runtime_tags(_requests_for(len(ids)), *budget),
                  **_retry_tags(ids, left)},
        ))
    if detection.updated:
        requests.append(RunRequest(
            job_name=refresh_manga_job.name,
            run_key=fresh_run_key(context.instance,
                                  f"manga-updates:{detection.digest(detection.updated)}"),
            run_config=RunConfig(ops={"refresh_manga": RefreshMangaConfig(
                mangadex_ids=sorted(detection.updated))}),
            tags={**SENSOR_TAG, "mangasync/manga": str(len(detection.updated)),
                  **max_runtime_tags(_requests_for(len(detection.updated)), *budget),
                  **_retry_tags(detection.updated, changed)},
        ))
    new_cursor = detection.cursor or cursor
    new_count = sum(len(v) for v in detection.new_by_day.values())
    with engine.begin() as conn:
        state.set_state(conn, state.NEW_MANGA_POLL, status="idle", last_run_at=utcnow(),
                        last_success_at=utcnow(), last_cursor=new_cursor.encode(),
                        error_message=None,
                        metadata={"new": new_count, "updated": len(detection.updated),
                                  "seen": detection.seen})
    if not requests:
        # MangaDex was read and nothing is new: the catalogue is current. Saying so keeps its
        # freshness check green through a quiet hour; red then means MangaDex was not read.
        current = AssetObservation(asset_key=MANGA_CATALOGUE, metadata={
            "dagster/last_updated_timestamp": MetadataValue.timestamp(utcnow()),
            "polled_since": cursor.since.isoformat(), "changes_seen": detection.seen})
        return SensorResult(skip_reason=SkipReason(
            f"nothing new since {cursor.since.isoformat()} ({detection.seen} changes seen)"),
            cursor=new_cursor.encode(), asset_events=[current])
    context.log.info(f"{new_count} new manga in {sorted(by_partition)}, "
                     f"{len(detection.updated)} changed; cursor now "
                     f"{new_cursor.since.isoformat()}")
    return SensorResult(run_requests=requests, cursor=new_cursor.encode())


@sensor(
    job=deliver_notifications_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests a delivery run when the outbox holds notifications the server has "
                "not accepted yet (oldest first, with backoff).",
)
def notification_outbox_sensor(context: SensorEvaluationContext,
                               mangahub: MangaHub) -> RunRequest | SkipReason:
    engine = mangahub.engine_or_skip()
    if isinstance(engine, SkipReason):
        return engine
    with engine.connect() as conn:
        backlog = outbox.backlog(conn)
        head = outbox.pending(conn, 1)
    if not head:
        return SkipReason("outbox empty")
    now = utcnow()
    summary = (f"{backlog.pending} pending, oldest {round(backlog.oldest_age_seconds(now))} s "
               "old")
    if head[0].next_attempt_at > now:
        return SkipReason(f"{summary}; next attempt at "
                          f"{head[0].next_attempt_at.isoformat(timespec='seconds')}")
    # The time bucket lets a delivery run that died before touching the head be tried again.
    bucket = int(now.timestamp() // 300)
    return RunRequest(run_key=f"outbox:{head[0].id}:{head[0].attempts}:{bucket}",
                      tags={"mangasync/outbox_pending": str(backlog.pending)})


@definitions
def defs() -> Definitions:
    return Definitions(sensors=[manga_sensor(current_settings()), notification_outbox_sensor])
