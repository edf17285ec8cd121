"""The settings a code location is built from, and what every run shares.

`build_definitions(settings)` loads the defs folder while `building(settings)` holds them; the
defs modules' `@definitions` functions read them with `current_settings()`, so partitions,
crons, sensor intervals, freshness bounds and run tags all follow the argument. Nothing here
reads the environment at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from dagster import Backoff, Jitter, RetryPolicy

from mangasync_pipeline.config import Settings

_BUILDING: ContextVar[Settings | None] = ContextVar("mangasync_settings", default=None)

# The client already retries single requests; this covers a run that failed as a whole
# (MangaDex down for minutes, the database restarting).
RUN_RETRY = RetryPolicy(max_retries=3, delay=30, backoff=Backoff.EXPONENTIAL,
                        jitter=Jitter.PLUS_MINUS)
MANGADEX_POOL = "mangadex"


@contextmanager
def building(settings: Settings) -> Iterator[Settings]:
    """While the defs folder is loaded for `settings`."""
    token = _BUILDING.set(settings)
    try:
        yield settings
    finally:
        _BUILDING.reset(token)


def current_settings() -> Settings:
    """The settings the definitions being loaded are for; the environment's when the folder
    is loaded on its own (a tool that reads `defs/` without `definitions.py`)."""
    settings = _BUILDING.get()
    return Settings.from_env() if settings is None else settings
