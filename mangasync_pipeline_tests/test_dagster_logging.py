"""The daemon's per-tick lines at DEBUG and no colour codes off a terminal
(ops/dagster_logging.py), through Dagster's own logging set-up."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator

import coloredlogs
import pytest
from dagster._utils.log import configure_loggers

from mangasync_pipeline.ops import dagster_logging

pytestmark = pytest.mark.unit


@pytest.fixture
def daemon_log(monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """What the daemon would print, configured as `dagster-daemon run` configures it."""
    monkeypatch.setattr(coloredlogs, "ColoredFormatter", coloredlogs.ColoredFormatter)
    # configure_loggers sets these process-wide: each is put back for the tests after.
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    names = ["dagster", "dagit", "dagster-webserver",
             *(f"dagster.daemon.{n}" for n in dagster_logging.DAEMON_LOGGERS)]
    kept = {n: (list(lg.handlers), list(lg.filters), lg.level)
            for n in names if (lg := logging.getLogger(n))}
    yield lambda: capsys.readouterr().out
    for name, (handlers, filters, level) in kept.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.filters = handlers, filters
        logger.setLevel(level)




def test_per_tick_lines_are_debug_and_runs_and_errors_stay(daemon_log: Callable[[], str]) -> None:
    dagster_logging.install(terminal=False)
    configure_loggers(formatter="colored", log_level="INFO")
    sensors = logging.getLogger("dagster.daemon.SensorDaemon")
    sensors.info("Checking for new runs for sensor: new_chapters_sensor")
    sensors.info("Sensor new_chapters_sensor skipped: no new chapters since 2026-12-05T12:00")
    logging.getLogger("dagster.daemon.SchedulerDaemon").info(
        "Schedule new_chapters_schedule skipped: new_chapters_job run 131eb637 is still QUEUED")
    logging.getLogger("dagster.daemon.QueuedRunCoordinatorDaemon").info(
        "Priority sorting and checking tag concurrency limits for queued runs.")
    logging.getLogger("dagster.daemon.MonitoringDaemon").info("Collected 1 runs for monitoring")
    sensors.info("Launching run for new_chapters_sensor")
    sensors.error("Sensor new_chapters_sensor failed: MangaDex unreachable")
    printed = daemon_log()
    lines = printed.splitlines()
    assert len(lines) == 2, lines
    assert "INFO - Launching run for new_chapters_sensor" in lines[0]
    assert "ERROR - Sensor new_chapters_sensor failed" in lines[1]
    assert "\x1b[" not in printed


def test_debug_level_shows_the_per_tick_lines_again(daemon_log: Callable[[], str]) -> None:
    dagster_logging.install(terminal=False)
    configure_loggers(formatter="colored", log_level="DEBUG")
    logging.getLogger("dagster.daemon.SensorDaemon").info(
        "Checking for new runs for sensor: manual_sync_sensor")
    [line] = daemon_log().splitlines()
    assert "DEBUG - Checking for new runs for sensor: manual_sync_sensor" in line


def test_a_terminal_keeps_dagsters_colours(daemon_log: Callable[[], str]) -> None:
    dagster_logging.install(terminal=True)
    configure_loggers(formatter="colored", log_level="INFO")
    logging.getLogger("dagster.daemon.SensorDaemon").info("Launching run for x_sensor")
    assert "\x1b[" in daemon_log()


def test_an_unknown_command_is_refused_in_one_line() -> None:
    with pytest.raises(SystemExit) as exited:
        dagster_logging.main(["dg", "dev"])
    assert "usage:" in str(exited.value) and "\n" not in str(exited.value)
