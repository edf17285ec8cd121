"""Whether the database answers, as the HTTP side sees it: one log line when it goes, one when
it is back, and a probe in between so recovery is noticed without a restart or a request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("mangasync.notify.database")
T = TypeVar("T")

RETRY_AFTER = 5  # seconds a caller should wait after a 503


class DatabaseDown(RuntimeError):
    """The database cannot be reached now; the request may be retried later."""


def is_outage(exc: BaseException) -> bool:
    """A failure to reach the database, not a fault of the request or the code."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:300] or type(exc).__name__


class DatabaseStatus:
    def __init__(self, run_db: Callable[..., Awaitable[Any]], probe: Callable[[], Any],
                 probe_interval: float = 2.0) -> None:
        self._run_db = run_db
        self._probe = probe
        self._interval = probe_interval
        self.down_since: float | None = None
        self.reason = ""
        self._probing: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self.down_since is None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a database thread; DatabaseDown if the database cannot be reached."""
        try:
            result: T = await self._run_db(fn, *args)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.failed(exc)
            raise DatabaseDown(self.reason) from exc
        self.recovered()
        return result

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.reason = one_line(exc)
            log.error("database unreachable: %s; triggers answer 503 until it is back",
                      self.reason)
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._probe_until_back())

    def recovered(self) -> None:
        if self.down_since is not None:
            log.info("database reachable again after %.0f s",
                        time.monotonic() - self.down_since)
            self.down_since = None
            self.reason = ""

    async def _probe_until_back(self) -> None:
        while self.down_since is not None:
            await asyncio.sleep(self._interval)
            try:
                await self._run_db(self._probe)
            except Exception:  # still down: said once already
                continue
            self.recovered()

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
