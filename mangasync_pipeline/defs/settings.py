"""Settings read once when Dagster loads the code location; a bad value fails the load with
one line naming the variable."""

from __future__ import annotations

from datetime import date

from dagster import Backoff, Jitter, RetryPolicy

from mangasync_pipeline.config import Settings
from mangasync_pipeline.defs.partitions import daily_partitions

SETTINGS = Settings.from_env()
DAILY = daily_partitions(SETTINGS)

# The client already retries single requests; this covers a run that failed as a whole
# (MangaDex down for minutes, the database restarting).
RUN_RETRY = RetryPolicy(max_retries=3, delay=30, backoff=Backoff.EXPONENTIAL,
                        jitter=Jitter.PLUS_MINUS)
MANGADEX_POOL = "mangadex"


def partition_of(day: str) -> str:
    """The daily partition that holds `day`: days before the first partition count under it
    (as the sensors file old manga), so a write outside the range still shows on the graph."""
    return max(date.fromisoformat(day), SETTINGS.partitions_start).isoformat()
