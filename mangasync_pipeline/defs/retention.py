"""Bounded Dagster storage: a daily job deletes finished runs (and their event logs) older than
MANGASYNC_RUN_RETENTION, except the runs that hold each asset partition's latest
materialization, so the asset graph and partition status the UI shows stay whole.

At MangaDex's real traffic the 30 s chapter sensor launches up to 2,880 runs a day; Dagster
keeps every run and its events forever unless told otherwise. Sensor and schedule ticks are
bounded by the `retention` section of the instance configs. Dagster's `delete_run` leaves the
asset check executions of a run in their own table (each with its evaluation event), so the job
deletes those too, but for each check's latest, which the UI shows as the check's state.
"""


import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    OpExecutionContext,
    Output,
    RunsFilter,
    ScheduleDefinition,
    job,
    op,
)
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from sqlalchemy import delete, func, select

from mangasync_pipeline.defs.resources import SettingsParam

FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
PAGE = 500  # run ids read, and storage ids looked up, per query
T = TypeVar("T")
log = logging.getLogger("mangasync.retention")


@dataclass(frozen=True)
class PruneReport:
    deleted: int
    kept_for_materializations: int
    check_executions_deleted: int = 0

    def line(self) -> str:
        return (f"{self.deleted} runs deleted with {self.check_executions_deleted} asset check "
                f"executions; {self.kept_for_materializations} older runs kept because they "
                "hold a partition's latest materialization")


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def runs_holding_latest_materializations(instance: DagsterInstance,
                                         asset_keys: Iterable[AssetKey]) -> set[str]:
    """The run ids whose events are some partition's (or an unpartitioned asset's) latest
    materialization."""
    keep: set[str] = set()
    for key in asset_keys:
        latest = instance.get_latest_materialization_event(key)
        if latest is not None:
            keep.add(latest.run_id)
        by_partition = instance.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION)
        for chunk in _chunks(sorted(by_partition.values()), PAGE):
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, storage_ids=chunk), limit=len(chunk)).records
            keep.update(record.run_id for record in records)
    return keep


def prune_runs(instance: DagsterInstance, cutoff: datetime,
               asset_keys: Iterable[AssetKey]) -> PruneReport:
    """Deletes finished runs created before `cutoff`, keeping those the UI needs for each
    partition's latest materialization."""
    keep = runs_holding_latest_materializations(instance, asset_keys)
    # Read every id first: deleting while paging would pull the cursor's own row away.
    old: list[str] = []
    cursor = None
    while True:
        page = instance.get_run_ids(RunsFilter(created_before=cutoff, statuses=FINISHED),
                                    cursor=cursor, limit=PAGE)
        if not page:
            break
        old.extend(page)
        cursor = page[-1]
    doomed = [run_id for run_id in old if run_id not in keep]
    for done, run_id in enumerate(doomed, start=1):
        instance.delete_run(run_id)
        if done % 1000 == 0:
            log.info(f"retention: {done} of {len(doomed)} old runs deleted")
    return PruneReport(deleted=len(doomed), kept_for_materializations=len(old) - len(doomed),
                       check_executions_deleted=delete_check_executions(instance, doomed))


def delete_check_executions(instance: DagsterInstance, run_ids: list[str]) -> int:
    """Deletes the asset check executions of `run_ids`, but for each check's latest one;
    returns how many. `DagsterInstance.delete_run` leaves them (Dagster 1.13), and no public
    API deletes them, so this goes to the event log's index tables as Dagster's own does."""
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage) or not run_ids:
        return 0
    table = AssetCheckExecutionsTable
    latest = select(func.max(table.c.id)).group_by(table.c.asset_key, table.c.check_name)
    deleted = 0
    for chunk in _chunks(run_ids, PAGE):
        with storage.index_connection() as conn:
            deleted += conn.execute(delete(table).where(
                table.c.run_id.in_(chunk), table.c.id.not_in(latest.scalar_subquery()))).rowcount
    return deleted


@op(description="Deletes finished runs older than MANGASYNC_RUN_RETENTION, keeping each "
                "partition's latest materialization.")
def prune_old_runs(context: OpExecutionContext, settings: SettingsParam) -> Output:
    cutoff = datetime.now(UTC) - settings.run_retention
    # Every asset the instance has events of, including ones no longer defined.
    report = prune_runs(context.instance, cutoff, context.instance.get_asset_keys())
    context.log.info(f"runs created before {cutoff:%Y-%m-%d %H:%M} UTC: {report.line()}")
    return Output(None, metadata={"runs_deleted": report.deleted,
                                  "check_executions_deleted": report.check_executions_deleted,
                                  "runs_kept_for_materializations":
                                      report.kept_for_materializations,
                                  "cutoff": cutoff.isoformat(timespec="seconds")})


@job(description="Bounds Dagster's storage: deletes old runs and their event logs "
                 "(MANGASYNC_RUN_RETENTION, default 30 days).")
def prune_runs_job() -> None:
    prune_old_runs()


prune_runs_schedule = ScheduleDefinition(
    name="prune_runs_schedule", cron_schedule="17 3 * * *", job=prune_runs_job,
    execution_timezone="UTC", default_status=DefaultScheduleStatus.RUNNING,
    description="Daily at 03:17 UTC, off the hour when other schedules fire.")
