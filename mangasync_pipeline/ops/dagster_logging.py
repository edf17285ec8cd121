"""Dagster's webserver and daemon, logging what an operator needs to read.

`python -m mangasync_pipeline.ops.dagster_logging dagster-daemon run --workspace ...` (or
`dagster-webserver ...`) runs that Dagster command with two changes to its logging:

- The lines the daemon writes on every tick (a sensor checked, a quiet tick skipped, the run
  queue sorted, runs collected for monitoring; a quiet tick's reason
  stays in the tick's history in the UI) are DEBUG, not INFO: at the 30-s chapter
  sensor they were most of the log, burying the runs launched and the errors. `--log-level
  debug` shows them again.
- Where the output is not a terminal (a log file, `docker compose logs` read by a collector),
  lines carry no colour codes.

The local stack (`ops/system.py`) and the compose deployment start Dagster through this.
"""

from __future__ import annotations

import logging
import re
import sys
from importlib.metadata import entry_points
from typing import Any

# What the daemons log on every tick or loop, by Dagster's wording (dagster/_daemon/).
PER_TICK = re.compile(
    r"Checking for new runs for sensor: "
    r"|(Sensor|Schedule) \S+ skipped: "
    r"|No run requests returned for \S+, skipping"
    r"|Checking for new runs for the following schedules: "
    r"|No new tick times to evaluate for "
    r"|Priority sorting and checking tag concurrency limits for queued runs"
    r"|Collected \d+ runs? for monitoring"
    r"|Checking run [0-9a-f-]{36}$")
DAEMON_LOGGERS = ("SensorDaemon", "SchedulerDaemon", "QueuedRunCoordinatorDaemon",
                  "MonitoringDaemon")
COMMANDS = ("dagster-daemon", "dagster-webserver")


class PerTickAtDebug(logging.Filter):
    """Gives a per-tick line the DEBUG level; Dagster's handler, set to `--log-level`, then
    drops it unless that level is debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and PER_TICK.match(record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class PlainFormatter(logging.Formatter):
    """Dagster's "colored" format without the colours (it takes the same arguments)."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None,
                 **_styles: Any) -> None:
        super().__init__(fmt, datefmt)


def install(*, terminal: bool) -> None:
    """Set up this process's logging before Dagster configures its own."""
    for name in DAEMON_LOGGERS:
        # A logger's own filters survive Dagster's dictConfig, which names only `dagster`.
        logging.getLogger(f"dagster.daemon.{name}").addFilter(PerTickAtDebug())
    if not terminal:
        import coloredlogs

        # Dagster builds its "colored" formatter from this attribute each time it configures
        # logging, and offers no uncoloured text format of its own.
        coloredlogs.ColoredFormatter = PlainFormatter  # type: ignore[misc,assignment]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        sys.exit(f"usage: python -m {__spec__.name if __spec__ else __name__} "
                 f"{{{'|'.join(COMMANDS)}}} [ARGS...]")
    [script] = entry_points(group="console_scripts", name=args[0])
    install(terminal=sys.stdout.isatty())
    sys.argv = list(args)
    script.load()()


if __name__ == "__main__":
    main()
