"""CHAPTER_POLL_INTERVAL is honoured exactly by the schedule, or refused at start-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest
from dagster import ScheduleDefinition
from dagster._utils.schedules import schedule_execution_time_iterator

from mangasync_pipeline.config import ConfigError, Settings
from mangasync_pipeline.defs.jobs import new_chapters_job
from mangasync_pipeline.defs.schedules import chapters_schedule, cron_for


def _ticks(interval: str, days: int = 2) -> list[datetime]:
    """The tick times the Dagster daemon computes for the schedule this setting gives."""
    settings = Settings.from_env({"CHAPTER_POLL_INTERVAL": interval})
    cron = cron_for(settings.chapter_poll_interval)
    # Dagster accepts it as a schedule (a list where one cron string cannot say it).
    ScheduleDefinition(name="probe", cron_schedule=cron, job=new_chapters_job,
                       execution_timezone="UTC")
    start = datetime(2025, 9, 1, 0, 0, tzinfo=UTC)
    count = int(days * timedelta(days=1) / settings.chapter_poll_interval)
    times = schedule_execution_time_iterator(start.timestamp() - 1, cron, "UTC")
    return [t.astimezone(UTC) for t in islice(times, count + 1)]


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "45m", "90m", "2h", "3h", "8h", "1d"])
def test_the_schedule_fires_exactly_every_interval_across_midnight(interval: str) -> None:
    ticks = _ticks(interval)
    step = Settings.from_env({"CHAPTER_POLL_INTERVAL": interval}).chapter_poll_interval
    assert ticks[0] == datetime(2025, 9, 1, 0, 0, tzinfo=UTC)
    gaps = {later - earlier for earlier, later in zip(ticks, ticks[1:], strict=False)}
    assert gaps == {step}, f"{interval}: ticks {gaps} apart"


def test_ninety_minutes_is_not_hourly_and_45_minutes_is_not_00_and_45() -> None:
    # The two settings the issue found wrong: hourly, and :00/:45 of every hour.
    assert [t.strftime("%H:%M") for t in _ticks("90m")[:4]] == \
        ["00:00", "01:30", "03:00", "04:30"]
    assert [t.strftime("%H:%M") for t in _ticks("45m")[:5]] == \
        ["00:00", "00:45", "01:30", "02:15", "03:00"]


@pytest.mark.parametrize("value", ["7m", "30s", "90s", "5h", "25h", "1.5m"])
def test_an_interval_the_schedule_cannot_keep_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"CHAPTER_POLL_INTERVAL": value})
    message = str(err.value)
    assert message.startswith(f"CHAPTER_POLL_INTERVAL={value!r}: must be whole minutes")
    assert "\n" not in message


def test_the_schedule_built_from_the_settings_uses_the_exact_crons() -> None:
    settings = Settings.from_env({"CHAPTER_POLL_INTERVAL": "90m"})
    assert chapters_schedule(settings).cron_schedule == cron_for(timedelta(minutes=90)) == [
        "0 0,3,6,9,12,15,18,21 * * *", "30 1,4,7,10,13,16,19,22 * * *"]
