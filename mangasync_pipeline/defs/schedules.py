"""`new_chapters_schedule`: the current chapter partition every CHAPTER_POLL_INTERVAL."""


from datetime import UTC, timedelta

from dagster import (
    DefaultScheduleStatus,
    RunConfig,
    RunRequest,
    ScheduleEvaluationContext,
    schedule,
)

from mangasync_pipeline.defs.assets import NewChaptersConfig
from mangasync_pipeline.defs.jobs import new_chapters_job
from mangasync_pipeline.defs.settings import SETTINGS


def cron_for(interval: timedelta) -> str:
    """Cron cannot go below a minute: shorter intervals run every minute."""
    minutes = max(1, round(interval.total_seconds() / 60))
    if minutes < 60:
        return f"*/{minutes} * * * *" if minutes > 1 else "* * * * *"
    hours = max(1, minutes // 60)
    return f"0 */{hours} * * *" if hours < 24 else "0 0 * * *"


@schedule(
    cron_schedule=cron_for(SETTINGS.chapter_poll_interval),
    job=new_chapters_job,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Materializes today's new_chapters partition, and yesterday's too during the "
                "first interval after midnight UTC so late chapters of the old day are kept.",
)
def new_chapters_schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
    when = context.scheduled_execution_time.astimezone(UTC)
    # Polls resume at the cursor: run config, so the Launchpad shows it and a re-execution
    # without it reads whole days.
    poll = RunConfig(ops={"new_chapters": NewChaptersConfig(from_cursor=True)})
    today = when.date()
    requests = [RunRequest(partition_key=today.isoformat(),
                           run_key=f"chapters:{today}:{when.isoformat()}", run_config=poll)]
    midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if when - midnight < SETTINGS.chapter_poll_interval:
        yesterday = today - timedelta(days=1)
        if yesterday >= SETTINGS.partitions_start:
            requests.append(RunRequest(partition_key=yesterday.isoformat(),
                                       run_key=f"chapters:{yesterday}:{when.isoformat()}",
                                       run_config=poll))
    return requests


SCHEDULES = [new_chapters_schedule]
