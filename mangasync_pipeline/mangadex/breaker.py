"""A circuit breaker whose state every process shares.

closed --(threshold consecutive failures)--> open --(open_seconds pass)--> half_open
half_open lets one trial request through at a time; `close_after` consecutive successes
close it, one failure reopens it. The logic is plain code over `CircuitState`; where the
state lives is a `CircuitStore`: in memory for one process, or the MangaHub table
`mangadex_circuit` so every sync process sees the same circuit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from mangasync_pipeline.db.circuit import displayed_state
from mangasync_pipeline.mangadex.errors import CircuitOpenError, MangaDexError

__all__ = ["CircuitBreaker", "CircuitState", "displayed_state", "store_for"]

State = Literal["closed", "open", "half_open"]
Change = Callable[["CircuitState"], "CircuitState | None"]

log = logging.getLogger("mangasync.mangadex")


@dataclass(frozen=True, slots=True)
class CircuitState:
    state: State = "closed"
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    # While open: when the trial may start. While half_open: until when the current trial
    # holds its claim (a crashed trial process must not wedge the circuit).
    opened_until: datetime | None = None
    last_error: str | None = None


class CircuitStore(Protocol):
    def read(self, name: str) -> CircuitState: ...

    def update(self, name: str, change: Change) -> CircuitState:
        """Apply `change` atomically (no other process in between); None means no change."""
        ...

    def close(self) -> None: ...


class MemoryCircuitStore:
    def __init__(self) -> None:
        self._states: dict[str, CircuitState] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> CircuitState:
        with self._lock:
            return self._states.get(name, CircuitState())

    def update(self, name: str, change: Change) -> CircuitState:
        with self._lock:
            current = self._states.get(name, CircuitState())
            new = change(current)
            if new is not None:
                self._states[name] = new
                return new
            return current

    def close(self) -> None:
        pass


class SqlCircuitStore:
    """The `mangadex_circuit` table; SELECT ... FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE
    (the MangaHub engine's default) on SQLite, so concurrent updates queue instead of
    clobbering each other."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import inspect

        from mangasync_pipeline.db.engine import shared_engine
        from mangasync_pipeline.db.tables import mangadex_circuit

        # The process's one engine for the MangaHub database: no pool of the breaker's own.
        self._engine = shared_engine(url)
        self._table = mangadex_circuit
        if not inspect(self._engine).has_table(mangadex_circuit.name):
            from mangasync_pipeline.db.engine import describe

            raise MangaDexError(
                f"database {describe(url)} has no table {mangadex_circuit.name} for the "
                "MangaDex circuit breaker: run `mangasync migrate` first"
            )

    def _state(self, row: Any) -> CircuitState:
        if row is None:
            return CircuitState()
        return CircuitState(
            state=row.state if row.state in ("closed", "open", "half_open") else "closed",
            consecutive_failures=row.consecutive_failures or 0,
            consecutive_successes=row.consecutive_successes or 0,
            opened_until=row.opened_until,
            last_error=row.last_error,
        )

    def read(self, name: str) -> CircuitState:
        from sqlalchemy import select

        t = self._table
        with self._engine.connect() as conn:
            return self._state(conn.execute(select(t).where(t.c.name == name)).first())

    def update(self, name: str, change: Change) -> CircuitState:
        from sqlalchemy import select, update

        t = self._table
        query = select(t).where(t.c.name == name).with_for_update()
        with self._engine.begin() as conn:
            row = conn.execute(query).first()
            if row is None:
                conn.execute(self._insert_if_missing(name))
                row = conn.execute(query).first()
            current = self._state(row)
            new = change(current)
            if new is None or new == current:
                return current
            conn.execute(
                update(t)
                .where(t.c.name == name)
                .values(
                    state=new.state,
                    consecutive_failures=new.consecutive_failures,
                    consecutive_successes=new.consecutive_successes,
                    opened_until=new.opened_until,
                    last_error=new.last_error,
                    updated_at=datetime.now(UTC),
                )
            )
            return new

    def _insert_if_missing(self, name: str) -> Any:
        values = {
            "name": name,
            "state": "closed",
            "consecutive_failures": 0,
            "consecutive_successes": 0,
            "updated_at": datetime.now(UTC),
        }
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(self._table).values(values).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(self._table).values(values).on_conflict_do_nothing()

    def close(self) -> None:
        pass  # the engine is shared with everything else on that URL


def _hms(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S") if moment else "?"


class CircuitBreaker:
    def __init__(
        self,
        store: CircuitStore | None = None,
        *,
        name: str = "mangadex",
        threshold: int = 10,
        open_seconds: float = 300.0,
        close_after: int = 3,
        trial_timeout: float = 120.0,
        cache_seconds: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        logger: logging.Logger | None = None,
    ) -> None:
        self.store: CircuitStore = store or MemoryCircuitStore()
        self.name = name
        self.threshold = threshold
        self.open_for = timedelta(seconds=open_seconds)
        self.close_after = close_after
        self.trial_for = timedelta(seconds=trial_timeout)
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.log = logger or log
        self._cached: CircuitState | None = None
        self._cached_at = 0.0
        self._lock = threading.Lock()

    # -- state access ---------------------------------------------------------------------

    def state(self, *, fresh: bool = False) -> CircuitState:
        """The shared state, re-read at most every `cache_seconds` (a read per request would
        cost more than the request when nothing is wrong)."""
        with self._lock:
            cached = self._cached
            if (
                not fresh
                and cached is not None
                and time.monotonic() - self._cached_at < self.cache_seconds
            ):
                return cached
        return self._remember(self.store.read(self.name))

    def _remember(self, state: CircuitState) -> CircuitState:
        with self._lock:
            self._cached = state
            self._cached_at = time.monotonic()
        return state

    def _update(self, change: Change) -> CircuitState:
        return self._remember(self.store.update(self.name, change))

    # -- the protocol the client follows ---------------------------------------------------

    def before_request(self) -> None:
        """Raise `CircuitOpenError` unless a request may go out now."""
        current = self.state()
        if current.state == "closed":
            return
        now = self.clock()
        if current.state == "open" and current.opened_until and now < current.opened_until:
            raise self._open_error(current)
        claimed = False

        def claim(state: CircuitState) -> CircuitState | None:
            nonlocal claimed
            if state.state == "closed":
                return None
            if state.opened_until is not None and now < state.opened_until:
                return None  # still open, or another process's trial is under way
            claimed = True
            return replace(
                state,
                state="half_open",
                consecutive_successes=state.consecutive_successes
                if state.state == "half_open"
                else 0,
                opened_until=now + self.trial_for,
            )

        new = self._update(claim)
        if new.state == "closed" or claimed:
            if claimed and current.state == "open":
                self.log.debug("MangaDex circuit half-open: sending a probe request")
            return
        raise self._open_error(new)

    def check(self) -> None:
        """Raise `CircuitOpenError` if the circuit is open now (no claim, no store write):
        what a caller asks before waiting out a backoff that would only meet it."""
        current = self.state()
        if current.state == "open" and current.opened_until and self.clock() < current.opened_until:
            raise self._open_error(current)

    def describe(self) -> str:
        """The circuit in a few words, for the end of a failure message."""
        current = self.state()
        if current.state == "closed":
            return (f"circuit closed ({current.consecutive_failures} of {self.threshold} "
                    "failures in a row): the next run tries again")
        return f"circuit {current.state}, next probe at {_hms(current.opened_until)} UTC"

    def record_success(self) -> None:
        current = self.state()
        if current.state == "closed" and current.consecutive_failures == 0:
            return
        closed = False

        def succeed(state: CircuitState) -> CircuitState | None:
            nonlocal closed
            if state.state == "closed":
                return (
                    replace(state, consecutive_failures=0) if state.consecutive_failures else None
                )
            if state.state == "open":
                return None  # a request from before the circuit opened; proves nothing now
            successes = state.consecutive_successes + 1
            if successes >= self.close_after:
                closed = True
                return CircuitState(last_error=state.last_error)
            return replace(state, consecutive_successes=successes, opened_until=None)

        self._update(succeed)
        if closed:
            # Decided inside the store's transaction: one line per outage across processes.
            self.log.info("MangaDex reachable again: circuit closed after %d successful "
                          "requests", self.close_after)

    def record_failure(self, error: str) -> None:
        now = self.clock()
        transition: State | None = None

        def fail(state: CircuitState) -> CircuitState:
            nonlocal transition
            failures = state.consecutive_failures + 1
            if state.state == "half_open" or (
                state.state == "closed" and failures >= self.threshold
            ):
                transition = state.state
                return CircuitState(
                    state="open",
                    consecutive_failures=failures,
                    opened_until=now + self.open_for,
                    last_error=error,
                )
            return replace(state, consecutive_failures=failures, last_error=error)

        new = self._update(fail)
        if transition == "closed":
            # The one line an outage gets when it starts; the store's lock makes it one line
            # across every process that shares the circuit.
            self.log.error(
                "MangaDex unreachable: circuit open until %s UTC (next probe then) after %d "
                "consecutive failures; last error: %s",
                _hms(new.opened_until),
                new.consecutive_failures,
                error,
            )
        elif transition == "half_open":
            self.log.debug("MangaDex probe failed (%s); circuit open until %s UTC",
                           error, _hms(new.opened_until))

    def _open_error(self, state: CircuitState) -> CircuitOpenError:
        if state.state == "half_open":
            text = (
                "MangaDex unavailable: circuit half-open, a probe request is in progress "
                f"(until {_hms(state.opened_until)} UTC); last error: {state.last_error}"
            )
        else:
            text = (
                f"MangaDex unavailable: circuit open until {_hms(state.opened_until)} UTC "
                f"(next probe then) after {state.consecutive_failures} consecutive failures; "
                f"last error: {state.last_error}"
            )
        return CircuitOpenError(text, probe_at=state.opened_until)

    def close(self) -> None:
        self.store.close()


def store_for(state_url: str | None) -> CircuitStore:
    """In memory without a state URL (or for in-memory SQLite), else the MangaHub table."""
    if state_url is None:
        return MemoryCircuitStore()
    from sqlalchemy.engine import make_url

    url = make_url(state_url)
    if url.get_backend_name() == "sqlite" and (not url.database or url.database == ":memory:"):
        return MemoryCircuitStore()
    return SqlCircuitStore(state_url)
