"""The shared circuit breaker: its rules on their own, then its state in the MangaHub DB."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta

import pytest

from mangasync_pipeline.mangadex.breaker import (
    CircuitBreaker,
    MemoryCircuitStore,
    SqlCircuitStore,
    displayed_state,
)
from mangasync_pipeline.mangadex.errors import CircuitOpenError


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_breaker(clock: FakeClock, store: object | None = None) -> CircuitBreaker:
    return CircuitBreaker(
        store or MemoryCircuitStore(),  # type: ignore[arg-type]
        threshold=10,
        open_seconds=300,
        close_after=3,
        clock=clock,
        cache_seconds=0,
    )


def fail(breaker: CircuitBreaker, times: int, error: str = "HTTP 503 on /manga") -> None:
    for _ in range(times):
        breaker.before_request()
        breaker.record_failure(error)


def test_opens_after_ten_consecutive_failures_with_a_clear_message() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 9)
    breaker.before_request()  # nine failures: still closed
    breaker.record_failure("HTTP 503 on /manga")
    with pytest.raises(CircuitOpenError) as err:
        breaker.before_request()
    assert str(err.value) == (
        "MangaDex unavailable: circuit open until 12:05:00 UTC (next probe then) after 10 "
        "consecutive failures; last error: HTTP 503 on /manga"
    )
    assert err.value.probe_at == clock.now + timedelta(minutes=5)


def test_an_outage_logs_one_line_when_it_starts_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    with caplog.at_level("INFO", logger="mangasync.mangadex"):
        for _ in range(25):  # requests already under way keep failing after it opened
            breaker.record_failure("HTTP 503 on /manga")
        for _ in range(3):  # three failed probes, five minutes apart
            clock.advance(301)
            breaker.before_request()
            breaker.record_failure("connection refused")
        clock.advance(301)
        for _ in range(3):  # MangaDex is back: three good probes close it
            breaker.before_request()
            breaker.record_success()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("MangaDex unreachable: circuit open until 12:05:00 UTC")
    assert lines[1].startswith("MangaDex reachable again")
    assert caplog.records[0].levelname == "ERROR"


@pytest.mark.parametrize(("state", "until_s", "shown"), [
    ("closed", None, "closed"),
    ("open", 60, "open"),
    ("open", -1, "half_open (probe due)"),
    ("half_open", 30, "half_open"),
    ("half_open", -1, "half_open (probe due)"),
])
def test_displayed_state_follows_the_clock_without_a_request(
    state: str, until_s: int | None, shown: str
) -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    until = None if until_s is None else (now + timedelta(seconds=until_s)).replace(tzinfo=None)
    assert displayed_state(state, until, now) == shown


def test_a_success_resets_the_failure_count() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 9)
    breaker.before_request()
    breaker.record_success()
    fail(breaker, 9)
    breaker.before_request()
    assert breaker.state().state == "closed"


def test_half_open_lets_one_trial_through_then_closes_after_three_successes() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 10)
    clock.advance(299)
    with pytest.raises(CircuitOpenError):
        breaker.before_request()
    clock.advance(1)
    breaker.before_request()  # the trial
    with pytest.raises(CircuitOpenError, match="probe request is in progress"):
        breaker.before_request()  # a second caller while the trial is out
    breaker.record_success()
    assert breaker.state().state == "half_open"
    breaker.before_request()
    breaker.record_success()
    breaker.before_request()
    breaker.record_success()
    assert breaker.state().state == "closed"
    fail(breaker, 9)
    breaker.before_request()  # a fresh count after closing


def test_failure_in_half_open_reopens_for_the_full_period() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 10)
    clock.advance(300)
    breaker.before_request()
    breaker.record_success()
    breaker.before_request()
    breaker.record_failure("timeout on /chapter")
    with pytest.raises(CircuitOpenError, match=r"until 12:10:00 UTC.*timeout on /chapter"):
        breaker.before_request()


def test_a_crashed_trial_does_not_wedge_the_circuit() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 10)
    clock.advance(300)
    breaker.before_request()  # the trial's process dies without reporting
    clock.advance(121)
    breaker.before_request()


@pytest.mark.database
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_state_is_shared_through_the_database(db: str, request: pytest.FixtureRequest) -> None:
    url = _url(db, request)
    clock = FakeClock()
    one = make_breaker(clock, SqlCircuitStore(url))
    other = make_breaker(clock, SqlCircuitStore(url))
    try:
        fail(one, 10)
        with pytest.raises(CircuitOpenError, match="10 consecutive failures"):
            other.before_request()
        clock.advance(300)
        other.before_request()
        with pytest.raises(CircuitOpenError, match="probe"):
            one.before_request()
        for _ in range(2):
            other.record_success()
            one.before_request()
        one.record_success()
        assert other.state(fresh=True).state == "closed"
    finally:
        one.close()
        other.close()


def _url(db: str, request: pytest.FixtureRequest) -> str:
    """A migrated database of the asked backend (the shared `db_url` fixture is parametrised)."""
    from mangasync_pipeline.db.migrate import upgrade
    from mangasync_pipeline_tests.conftest import drop_pg_database, new_pg_database

    if db == "sqlite":
        path = request.getfixturevalue("tmp_path") / "mangahub.sqlite"
        url = f"sqlite:///{path}"
        upgrade(url)
        return url
    name, url = new_pg_database(request.getfixturevalue("pg_template"))
    request.addfinalizer(lambda: drop_pg_database(name))
    return url


def _hammer(url: str, count: int) -> None:
    breaker = CircuitBreaker(SqlCircuitStore(url), threshold=10_000, cache_seconds=0)
    for i in range(count):
        breaker.record_failure(f"failure {i}")
    breaker.close()


@pytest.mark.database
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_concurrent_processes_do_not_lose_failures(db: str, request: pytest.FixtureRequest) -> None:
    url = _url(db, request)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(url, 40)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    store = SqlCircuitStore(url)
    try:
        assert store.read("mangadex").consecutive_failures == 120
    finally:
        store.close()
