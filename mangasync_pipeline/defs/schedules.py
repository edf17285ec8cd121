"""`new_chapters_schedule`: the current chapter partition every CHAPTER_POLL_INTERVAL."""

from datetime import UTC, timedelta

from dagster import (
    DefaultScheduleStatus,
    Definitions,
    RunConfig,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    definitions,
    schedule,
)

from mangasync_pipeline.config import Settings
from mangasync_pipeline.defs.assets import NewChaptersConfig
from mangasync_pipeline.defs.inflight import describe_run, max_runtime_tags, run_in_flight
from mangasync_pipeline.defs.jobs import new_chapters_job
from mangasync_pipeline.defs.settings import current_settings


def poll_runtime(settings: Settings) -> dict[str, str]:
    """`dagster/max_runtime` of a poll. A poll reads what became readable since the last one
    plus the lookback: a few pages of /chapter and a baseline feed per newly seen manga, at
    most one batch of CHAPTER_BATCH_SIZE."""
    return max_runtime_tags(10 + 2 * settings.chapter_batch_size, settings.mangadex_rate_limit,
                            settings.mangadex_policy.failure_bound())


def cron_for(interval: timedelta) -> str | list[str]:
    """Cron strings that fire exactly every `interval` (whole minutes dividing a day, as
    config.py requires). One string where cron can say it (`*/15 * * * *`, `0 */2 * * *`);
    otherwise one string per minute of the hour the ticks fall on, each with its hours
    (90m: `0 0,3,...,21 * * *` and `30 1,4,...,22 * * *`)."""
    minutes = int(interval.total_seconds() // 60)
    if 60 % minutes == 0:
        return f"*/{minutes} * * * *" if minutes > 1 else "* * * * *"
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"0 */{hours} * * *" if hours < 24 else "0 0 * * *"
    hours_at: dict[int, list[int]] = {}
    for tick in range(0, 24 * 60, minutes):
        hours_at.setdefault(tick % 60, []).append(tick // 60)
    return [f"{minute} {','.join(map(str, hours))} * * *"
            for minute, hours in sorted(hours_at.items())]


def chapters_schedule(settings: Settings) -> ScheduleDefinition:
    """new_chapters_schedule, every CHAPTER_POLL_INTERVAL."""

    @schedule(
        cron_schedule=cron_for(settings.chapter_poll_interval),
        job=new_chapters_job,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Materializes today's new_chapters partition, and yesterday's too during "
                    "the first interval after midnight UTC so late chapters of the old day are "
                    "kept.",
    )
    def new_chapters_schedule(context: ScheduleEvaluationContext
                              ) -> list[RunRequest] | SkipReason:
        return poll(context, settings)

    return new_chapters_schedule


def poll(context: ScheduleEvaluationContext, settings: Settings) -> list[RunRequest] | SkipReason:
    when = context.scheduled_execution_time.astimezone(UTC)
    # Polls resume at the cursor: run config, so the Launchpad shows it and a re-execution
    # without it reads whole days.
    poll = RunConfig(ops={"new_chapters": NewChaptersConfig(from_cursor=True)})
    today = when.date()
    days = [today]
    midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if when - midnight < settings.chapter_poll_interval:
        yesterday = today - timedelta(days=1)
        if yesterday >= settings.partitions_start:
            days.append(yesterday)
    runtime = poll_runtime(settings)
    requests, busy = [], []
    for day in days:
        # One poll per partition: a run that is still queued or hanging on MangaDex owns it,
        # and the next one reads from the same cursor anyway.
        running = run_in_flight(context.instance, new_chapters_job.name,
                                partition_key=day.isoformat())
        if running is not None:
            busy.append(describe_run(running))
            continue
        requests.append(RunRequest(partition_key=day.isoformat(),
                                   run_key=f"chapters:{day}:{when.isoformat()}", run_config=poll,
                                   tags=runtime))
    if busy:
        context.log.info(f"not polling again: {'; '.join(busy)}")
    return requests or SkipReason(f"{'; '.join(busy)}: not requesting another poll")


@definitions
def defs() -> Definitions:
    return Definitions(schedules=[chapters_schedule(current_settings())])
