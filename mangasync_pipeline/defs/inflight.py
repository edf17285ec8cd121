"""Runs already queued or in progress, so schedules and sensors do not request a second one
for the same work while the first is still on its way (a hung MangaDex must not pile runs up)."""

from __future__ import annotations

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

# Everything between "requested" and "finished": a run in any of these still owns its work.
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def run_in_flight(instance: DagsterInstance, job_name: str, *,
                  partition_key: str | None = None,
                  tags: dict[str, str] | None = None) -> DagsterRun | None:
    """The newest queued or running run of `job_name` (for `partition_key`), if any."""
    wanted = dict(tags or {})
    if partition_key is not None:
        wanted["dagster/partition"] = partition_key
    runs = instance.get_runs(
        filters=RunsFilter(job_name=job_name, statuses=IN_FLIGHT, tags=wanted), limit=1)
    return runs[0] if runs else None
