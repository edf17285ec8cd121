"""Runs already queued or in progress, so schedules and sensors do not request a second one
for the same work while the first is still on its way (a hung MangaDex must not pile runs up),
and the longest a requested run may take before run monitoring fails it."""

from __future__ import annotations

import math

from dagster import (
    MAX_RUNTIME_SECONDS_TAG,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
)

# Everything between "requested" and "finished": a run in any of these still owns its work.
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]

# Process start, resources, database work and delivery around the MangaDex requests.
RUN_OVERHEAD_SECONDS = 120
# Other runs, sensors and the server share the request budget.
RATE_SHARE = 3


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


def describe_run(run: DagsterRun) -> str:
    partition = run.tags.get("dagster/partition")
    return (f"{run.job_name} run {run.run_id[:8]}"
            + (f" for {partition}" if partition else "") + f" is still {run.status.value}")


def max_runtime_tags(requests: int, rate_limit: float, failure_bound: float) -> dict[str, str]:
    """`dagster/max_runtime` for a run expected to make about `requests` MangaDex requests:
    their time at a share of the rate limit, one outage's worth of retries, and start-up.
    Run monitoring fails a run that passes it, so a hung run cannot hold its slot forever."""
    seconds = requests / max(rate_limit, 0.1) * RATE_SHARE + failure_bound + RUN_OVERHEAD_SECONDS
    return {MAX_RUNTIME_SECONDS_TAG: str(math.ceil(seconds))}


# Finished without doing their work: the same request may be asked for again.
UNSUCCESSFUL = [DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def fresh_run_key(instance: DagsterInstance, key: str) -> str:
    """`key`, or `key` with an attempt number once runs of it failed or were cancelled.

    A sensor's run key is spent once any run carried it, whatever became of that run: the same
    work asked for again after a failure would be dropped as a duplicate, and the manga of a
    failed catalogue run would never be catalogued. A succeeded run keeps its key, so a
    repeated tick stays harmless."""
    candidate, attempt = key, 0
    while True:
        runs = instance.get_runs(RunsFilter(tags={"dagster/run_key": candidate}), limit=1)
        if not runs or runs[0].status not in UNSUCCESSFUL:
            return candidate
        attempt += 1
        candidate = f"{key}:again-{attempt}"
