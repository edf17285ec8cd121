"""REGISTER's view of the users table: in memory, on a database pool of its own.

A REGISTER is checked against this table without touching the database, so a flood of them
costs no query, and the triggers' database threads cannot delay a reader's REGISTER. The table
is loaded at start and kept fresh by LISTEN/NOTIFY on PostgreSQL (`users add` and
`users rotate-token` announce the username) and by a periodic re-read of the few bytes per user
(id, name, token version) on both backends. A name not in the table is looked up once on the
directory's own pool, within a global budget, so a user added a second ago can register at once.
The same pool records REGISTER nonces and runs catch-up queries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.notify.store import NotifyStore, UserEntry
from mangasync_pipeline.notify.tokens import reader_token

log = logging.getLogger("mangasync.notify.directory")
T = TypeVar("T")


@dataclass
class Reader:
    """One user as REGISTER needs it, with the token derived once."""

    id: int
    username: str
    token: str | None  # None: no token (see `mangasync users rotate-token`)
    checked: float  # monotonic time of the last read from the database


class UserDirectory:
    def __init__(self, url: str, key: bytes, *, refresh_every: float,
                 misses_per_second: float) -> None:
        pool: dict[str, Any] = {} if url.startswith("sqlite") else {"pool_size": 2,
                                                                    "max_overflow": 0}
        self.engine: Engine = make_engine(url, **pool)
        self.store = NotifyStore(self.engine)
        self.key = key
        self.refresh_every = refresh_every
        self.readers: dict[str, Reader] = {}
        self.loaded = False
        self._executor = ThreadPoolExecutor(2, thread_name_prefix="notify-users")
        self._miss_rate = misses_per_second
        self._miss_tokens = misses_per_second
        self._miss_updated = time.monotonic()
        self._lookups: dict[str, asyncio.Future[Reader | None]] = {}
        self._absent: dict[str, float] = {}  # names looked up and not found: when
        self._rechecked: dict[str, float] = {}

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor,
                                                                partial(fn, *args))

    def _reader(self, entry: UserEntry, now: float) -> Reader:
        token = (reader_token(self.key, entry.id, entry.token_version)
                 if entry.token_version is not None else None)
        return Reader(entry.id, entry.username, token, now)

    def _load(self) -> tuple[dict[str, Reader], list[str]]:
        now = time.monotonic()
        entries = self.store.users()
        return ({e.username: self._reader(e, now) for e in entries},
                [e.username for e in entries if e.token_version is None])

    async def refresh(self) -> None:
        """Re-read every user (a few bytes each; tokens derived on the pool's thread)."""
        readers, missing = await self.run(self._load)
        self.readers = readers
        self._absent.clear()
        if not self.loaded:
            self.loaded = True
            if missing:
                log.warning("%d readers have no token since tokens stopped being stored; give "
                            "each one with `mangasync users rotate-token NAME`: %s",
                            len(missing), ", ".join(missing[:20]))

    async def reread(self, username: str) -> Reader | None:
        """Re-read one user now (announced change, or a miss within the budget)."""
        pending = self._lookups.get(username)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Reader | None] = asyncio.get_running_loop().create_future()
        self._lookups[username] = future
        try:
            entries = await self.run(self.store.users, username)
            reader = self._reader(entries[0], time.monotonic()) if entries else None
            if reader is None:
                self.readers.pop(username, None)
                self._absent[username] = time.monotonic()
            else:
                self.readers[username] = reader
                self._absent.pop(username, None)
            future.set_result(reader)
            return reader
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._lookups[username]

    def recheck_delay(self, username: str, now: float) -> float | None:
        """When a signature that did not match may cost a re-read of the user (the token may
        have been given or rotated a moment ago): seconds from now. At most one re-read per
        user per second (REGISTERs meanwhile share the next one); None when the global
        budget of lookups is spent."""
        last = self._rechecked.get(username)
        if last is not None and last > now:
            return last - now  # one is scheduled: share it
        at = now if last is None or now - last >= 1.0 else last + 1.0
        if not self.may_look_up(username, now):
            return None
        if len(self._rechecked) > 100_000:
            self._rechecked.clear()
        self._rechecked[username] = at
        return at - now

    def may_look_up(self, username: str, now: float) -> bool:
        """Whether a name absent from memory may cost a query: once per name per refresh
        period, and within the global budget of misses per second."""
        seen = self._absent.get(username)
        if seen is not None and now - seen < self.refresh_every:
            return False
        if username in self._lookups:
            return True
        self._miss_tokens = min(self._miss_rate, self._miss_tokens
                                + (now - self._miss_updated) * self._miss_rate)
        self._miss_updated = now
        if self._miss_tokens < 1:
            return False
        self._miss_tokens -= 1
        if len(self._absent) > 100_000:
            self._absent.clear()
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
