"""Telling an operator: one line per failed run to a Slack-compatible webhook, and every
failed run counted in `mangadex_sync_errors_total{type, error_code}` for /metrics.

A sync that fails all night must reach someone who is not looking at the UI. The sensor
posts `{"text": ...}` (Slack's incoming-webhook body, which Mattermost, Rocket.Chat and
most chat bridges take too) naming the run id, job, partition and the first failed step's
one-line reason, so the line alone says where to look.
"""

from __future__ import annotations

import httpx
from dagster import (
    DagsterEvent,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SkipReason,
    run_failure_sensor,
)

from mangasync_pipeline.defs.reporting import record_errors
from mangasync_pipeline.defs.resources import Alerts, MangaHub


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def _step_reason(event: DagsterEvent) -> str:
    data = event.step_failure_data
    reason = ""
    if data.user_failure_data is not None:
        reason = _first_line(data.user_failure_data.description)
    if not reason and data.error is not None:
        reason = _first_line(data.error.message)
    return f"step {event.step_key}: {reason or 'failed'}"


def error_code(event: DagsterEvent) -> str:
    """The failure's kind (`mangadex_unavailable`, `transient`, `mangadex_error`, `schema`,
    `unexpected`: defs/failures.py), else the exception's class."""
    data = event.step_failure_data
    user = data.user_failure_data
    if user is not None and "kind" in user.metadata:
        return str(user.metadata["kind"].value)
    return data.error.cls_name if data.error is not None and data.error.cls_name else "failure"


def failure_line(context: RunFailureSensorContext) -> str:
    """`mangasync: run <id> of <job> [partition P] failed: step S: <reason>`."""
    run = context.dagster_run
    partition = run.tags.get("dagster/partition") or (
        f"{run.tags['dagster/asset_partition_range_start']}.."
        f"{run.tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in run.tags else None)
    where = f" partition {partition}" if partition else ""
    steps = context.get_step_failure_events()
    reason = (_step_reason(steps[0]) if steps
              else _first_line(context.failure_event.message) or "failed")
    more = f" (+{len(steps) - 1} more failed steps)" if len(steps) > 1 else ""
    return f"mangasync: run {run.run_id} of {run.job_name}{where} failed: {reason}{more}"


@run_failure_sensor(
    name="run_failure_alert_sensor",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Counts each failed run in mangadex_sync_errors_total and posts one line "
                "(run id, job, partition, the failed step's reason) to MANGASYNC_ALERT_WEBHOOK, "
                "tried three times; a webhook that still fails is logged, and the count reaches "
                "/metrics and the alert rules all the same.")
def run_failure_alert_sensor(context: RunFailureSensorContext, alert_webhook: Alerts,
                             mangahub: MangaHub) -> SkipReason | None:
    line = failure_line(context)
    # Counted first and once: Dagster moves this sensor's cursor past the run whatever the tick
    # does, so a tick that failed later would never come back to it.
    codes = [error_code(e) for e in context.get_step_failure_events()] or ["run_failure"]
    record_errors(mangahub.engine(), sync_type(context.dagster_run.job_name), codes)
    if not alert_webhook.url:
        return SkipReason(f"counted; MANGASYNC_ALERT_WEBHOOK is not set: {line}")
    try:
        alert_webhook.post(line)
    except httpx.HTTPError as exc:
        # Not raised: the run would not be offered again. The error counter above still
        # reaches /metrics and the MangasyncSyncFailing alert.
        context.log.error(f"MANGASYNC_ALERT_WEBHOOK refused 3 tries ({exc}); not told: {line}")
        return SkipReason(f"counted; the webhook failed: {exc}")
    context.log.info(f"posted: {line}")
    return None


def sync_type(job_name: str) -> str:
    """The `type` label, as the runs' own counters have it: the job without `_job`
    (`catalogue`, `new_chapters`, ...); `assets` for a run of the UI's asset job."""
    return "assets" if job_name.startswith("__ASSET_JOB") else job_name.removesuffix("_job")
