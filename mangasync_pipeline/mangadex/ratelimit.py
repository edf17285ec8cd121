"""The request rate limit, shared by every thread and process that uses the same MangaHub DB.

MangaDex (and the simulator) count requests in a sliding one-second window, and a burst
that is legal at our end can arrive as an illegal one at theirs once network jitter moves
it around. So instead of "N per second" we space requests: at most one per
`(1 + margin) / rate` seconds. Six consecutive requests then span more than a second by
`5 * margin / rate` (40 ms at 5/s with the default margin), which absorbs the jitter, and
the achieved rate stays near `1 / (1 + margin)` of the limit (96 %).

Where the bucket lives:
- no state URL (or an in-memory SQLite URL): in this process only;
- a SQLite MangaHub DB: pyrate-limiter's SQLite bucket in a file beside the DB file,
  behind its file lock so processes take turns;
- a PostgreSQL MangaHub DB: pyrate-limiter's Postgres bucket (table
  `ratelimit___mangadex`) in that same database, over the connection pool of the process's
  one engine for it (`shared_engine`). Stamps are this machine's wall clock, so processes on
  several hosts need synchronised clocks (NTP), as they do anyway.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyrate_limiter import (
    AbstractBucket,
    InMemoryBucket,
    PostgresBucket,
    Rate,
    RateItem,
    SQLiteBucket,
)
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from mangasync_pipeline.db.engine import shared_engine

DEFAULT_MARGIN = 0.04
_LEAK_EVERY = 64
_MIN_SLEEP = 0.002


def spacing_ms(rate: float, margin: float = DEFAULT_MARGIN) -> int:
    """Milliseconds between two requests for `rate` requests/second, margin included."""
    return math.ceil(1000.0 * (1.0 + margin) / rate)


def sqlite_state_path(db_path: str) -> Path:
    """The limiter's file beside a SQLite MangaHub DB file."""
    path = Path(db_path)
    return path.with_name(path.name + ".ratelimit")


def _make_bucket(rate: Rate, state_url: str | None, name: str) -> AbstractBucket:
    if state_url is None:
        return InMemoryBucket([rate])
    url = make_url(state_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            return InMemoryBucket([rate])
        path = sqlite_state_path(url.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteBucket.init_from_file(
            [rate], table=f"{name}_rate", db_path=str(path), use_file_lock=True
        )
    if backend == "postgresql":
        # The URL as Settings normalised it (postgresql+psycopg): the engine's connections
        # are psycopg's, which is what pyrate's bucket speaks.
        engine = shared_engine(state_url)
        return _LockedPostgresBucket(_EnginePool(engine), name, [rate], engine)
    raise ValueError(f"rate limit state: unsupported database URL scheme {url.drivername!r}")


class _EnginePool:
    """The part of psycopg_pool's ConnectionPool that pyrate's Postgres bucket uses, over a
    SQLAlchemy engine's pool: the limiter opens no connection pool of its own."""

    closed = False

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        # As psycopg_pool does: commit when the block ends, roll back when it raises.
        proxied = self._engine.raw_connection()
        conn = proxied.driver_connection
        try:
            yield conn
            conn.commit()  # type: ignore[union-attr]
        except BaseException:
            conn.rollback()  # type: ignore[union-attr]
            raise
        finally:
            proxied.close()  # back to the engine's pool

    def close(self) -> None:
        pass  # the engine is the process's, shared with everything else on that URL


class _AdvisoryLock:
    """A PostgreSQL session advisory lock, as a context manager, on a connection of the
    engine's pool taken for the length of the lock.

    pyrate's Postgres bucket has no cross-process lock: two processes could each stamp, and
    the one descheduled before its insert would be admitted with a stale stamp. Holding this
    around stamp-and-put serialises them as SQLite's file lock does.
    """

    def __init__(self, engine: Engine, key: int) -> None:
        self._engine = engine
        self._key = key
        self._held: Any = None

    def __enter__(self) -> None:
        self._held = self._engine.raw_connection()
        conn = self._held.driver_connection
        conn.autocommit = True  # a session lock, outside any transaction
        conn.execute("SELECT pg_advisory_lock(%s)", (self._key,))

    def __exit__(self, *_: object) -> None:
        held, self._held = self._held, None
        conn = held.driver_connection
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            conn.autocommit = False
        finally:
            held.close()

    def close(self) -> None:
        pass


class _LockedPostgresBucket(PostgresBucket):  # type: ignore[misc]
    def __init__(self, pool: Any, table: str, rates: list[Rate], engine: Engine) -> None:
        super().__init__(pool, table, rates)
        key = int.from_bytes(table.encode()[:8].ljust(8, b"\0"), "big") & (2**63 - 1)
        self._advisory = _AdvisoryLock(engine, key)

    def limiter_lock(self) -> object:
        return self._advisory

    def close(self) -> None:
        self._advisory.close()
        super().close()


class RateLimiter:
    """Blocks until a request may be sent; `acquire()` returns the seconds it waited.

    `rate` None or <= 0 turns the limit off (tests that are not about it, benchmarks).
    """

    def __init__(
        self,
        rate: float | None,
        state_url: str | None = None,
        *,
        margin: float = DEFAULT_MARGIN,
        name: str = "mangadex",
    ) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.name = name
        self._lock = threading.Lock()
        self._bucket: AbstractBucket | None = None
        self._puts = 0
        self._shared_lock: Any = None
        self.interval_ms = 0
        if self.rate is not None:
            self.interval_ms = spacing_ms(self.rate, margin)
            self._bucket = _make_bucket(Rate(1, self.interval_ms), state_url, name)
            self._shared_lock = self._bucket.limiter_lock()

    @property
    def enabled(self) -> bool:
        return self._bucket is not None

    def acquire(self) -> float:
        bucket = self._bucket
        if bucket is None:
            return 0.0
        started = time.monotonic()
        cap = self.interval_ms / 1000.0
        while True:
            # The stamp is taken inside the cross-process lock (SQLite's file lock, which
            # polls every 50 ms): a stamp taken before waiting for it would be stale by the
            # time the request is admitted, and the next process would be let in that much
            # early. A fresh stamp for every attempt, for the same reason.
            with self._lock, self._shared_lock or contextlib.nullcontext():
                item = RateItem(self.name, _now(bucket))
                if bucket.put(item):
                    self._puts += 1
                    if self._puts % _LEAK_EVERY == 0:
                        bucket.leak(item.timestamp)
                    break
                wait_ms = bucket.waiting(item)
            wait = (wait_ms if isinstance(wait_ms, int) and wait_ms > 0 else 0) / 1000.0
            time.sleep(min(max(wait, _MIN_SLEEP), cap))
        return time.monotonic() - started

    def close(self) -> None:
        if self._bucket is not None:
            self._bucket.close()
            self._bucket = None

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _now(bucket: AbstractBucket) -> int:
    if isinstance(bucket, InMemoryBucket):
        now: Any = bucket.now()
        assert isinstance(now, int)
        return now
    # Shared buckets compare stamps from several processes, so wall-clock milliseconds.
    # Not the Postgres bucket's database clock: its extra round trip comes between the
    # stamp and the admission, and every millisecond there lets the next process in early.
    return time.time_ns() // 1_000_000
