"""Settings read once when Dagster loads the code location; a bad value fails the load with
one line naming the variable."""

from __future__ import annotations

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
