"""When the server refreshes the planner's statistics of `notifications` (PostgreSQL).

Until autovacuum catches up, PostgreSQL plans the one-hour suppression check on stale
statistics: a scan of each follower's notifications instead of the dedup index, 2 ms per
trigger at 500 rows per follower and growing. So the server runs ANALYZE itself once the
notifications it stored since the last refresh reach a quarter of the table (at least
1,000): a growth threshold like autovacuum's (whose default is a tenth), without its
one-minute wait; autovacuum still runs as configured. Each server counts only what it
stored itself. A fixed 1,000 meant an ANALYZE every 100 triggers of 10 followers, about
half of PostgreSQL's CPU under a stream of triggers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mangasync_pipeline.notify.store import NotifyStore

log = logging.getLogger("mangasync.notify.http")

BULK_ANALYZE = 1000
ANALYZE_GROWTH = 0.25


class StatisticsRefresh:
    """Counts stored notifications and runs one ANALYZE at a time in the background."""

    def __init__(self, store: NotifyStore, run_db: Callable[..., Awaitable[Any]]) -> None:
        self._store, self._run_db = store, run_db
        self._since = 0
        self._after = BULK_ANALYZE
        self._task: asyncio.Task[None] | None = None  # the loop keeps only weak references

    def stored(self, rows: int) -> None:
        self._since += rows
        if not self._store.is_postgres or self._since < self._after or self._task is not None:
            return
        self._since = 0
        self._task = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        try:
            rows = await self._run_db(self._store.refresh_statistics)
            self._after = max(BULK_ANALYZE, int(rows * ANALYZE_GROWTH))
        except Exception as exc:  # the next threshold tries again
            log.warning("refreshing statistics failed: %s", exc)
        finally:
            self._task = None
