"""The notifier's retry and backoff, fast: the server's answers come from `httpx.MockTransport`
(what each answer means to the outbox is the notifier's own logic, tested here in milliseconds);
the outbox is a real, migrated SQLite database. The end-to-end delivery tests use a real server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import upgrade
from mangasync_pipeline.db.tables import notification_outbox
from mangasync_pipeline.sync import outbox
from mangasync_pipeline.sync.notifier import DeliveryReport, Notifier

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'mangahub.sqlite'}"
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


def queue(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        for i in range(n):
            outbox.enqueue(conn, outbox.NEW_MANGA, {"manga_id": i + 1, "title": f"M{i}"},
                           f"new-manga:{i + 1}", utcnow())


def rows(engine: Engine) -> list[tuple[str, str, int]]:
    t = notification_outbox
    with engine.connect() as conn:
        return [(r.dedup_key, r.status, r.attempts) for r in conn.execute(
            select(t.c.dedup_key, t.c.status, t.c.attempts).order_by(t.c.id))]


def deliver(engine: Engine, handler: Handler, *, now: datetime | None = None,
            ignore_backoff: bool = False) -> tuple[DeliveryReport, list[str]]:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return handler(request)

    with Notifier("http://notify.test", transport=httpx.MockTransport(record)) as notifier:
        return notifier.deliver(engine, now=now, ignore_backoff=ignore_backoff), seen


def batch_results(request: httpx.Request, result: str = "accepted") -> httpx.Response:
    triggers = json.loads(request.content)["triggers"]
    return httpx.Response(200, json={"results": [{"result": result} for _ in triggers]})


def test_a_server_error_keeps_everything_pending_and_backs_off_exponentially(
        engine: Engine) -> None:
    queue(engine, 3)
    before = utcnow()
    report, seen = deliver(engine, lambda r: httpx.Response(503, json={"error": "down"}))
    assert seen == ["/notify/batch"] and report.failed == 1
    assert [s for _, s, _ in rows(engine)] == ["pending"] * 3
    first = report.waiting_until - before
    assert timedelta(seconds=4) <= first <= timedelta(seconds=6.5)  # 5 s, +-20 % jitter

    # Not due yet: nothing is sent at all.
    report, seen = deliver(engine, lambda r: httpx.Response(503))
    assert seen == [] and report.waiting_until is not None

    # Due again and failing again: the wait doubles.
    later = utcnow() + timedelta(seconds=7)
    report, _ = deliver(engine, lambda r: httpx.Response(503), now=later)
    second = report.waiting_until - utcnow()
    assert timedelta(seconds=7.5) <= second <= timedelta(seconds=12.5)
    assert rows(engine)[0][2] == 2 and {a for _, _, a in rows(engine)[1:]} == {0}

    # The server is back: everything goes, in order, in one request.
    report, seen = deliver(engine, batch_results, ignore_backoff=True)
    assert seen == ["/notify/batch"] and report.delivered == 3
    assert [s for _, s, _ in rows(engine)] == ["delivered"] * 3


def test_a_transport_error_is_transient_and_a_401_too(engine: Engine) -> None:
    queue(engine, 2)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    report, _ = deliver(engine, refuse)
    assert report.failed == 1 and "ConnectError" in report.errors[0]
    report, _ = deliver(engine, lambda r: httpx.Response(401, json={"error": "token"}),
                        ignore_backoff=True)
    assert report.failed == 1 and [s for _, s, _ in rows(engine)] == ["pending"] * 2


def test_per_trigger_verdicts_settle_each_entry_and_rejections_are_final(
        engine: Engine) -> None:
    queue(engine, 3)

    def mixed(request: httpx.Request) -> httpx.Response:
        triggers = json.loads(request.content)["triggers"]
        results = [{"result": "accepted"}, {"result": "unknown manga", "error": "manga_id"},
                   {"result": "duplicate"}][:len(triggers)]
        return httpx.Response(200, json={"results": results})

    report, _ = deliver(engine, mixed)
    assert (report.delivered, report.rejected) == (2, 1)
    assert [s for _, s, _ in rows(engine)] == ["delivered", "rejected", "delivered"]
    report, seen = deliver(engine, mixed)  # nothing left: nothing sent
    assert seen == [] and report.pending == 0


def test_a_server_without_the_batch_route_gets_one_request_each_and_stops_at_a_failure(
        engine: Engine) -> None:
    queue(engine, 3)
    answers = iter([httpx.Response(202, json={}), httpx.Response(500, text="boom")])

    def old_server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/notify/batch":
            return httpx.Response(404, text="Not Found")  # a plain 404: no such route
        return next(answers)

    report, seen = deliver(engine, old_server)
    assert seen == ["/notify/batch", "/notify/new-manga", "/notify/new-manga"]
    assert (report.delivered, report.failed) == (1, 1)
    # In order: the third is not sent past the second, which failed and waits its turn.
    assert [s for _, s, _ in rows(engine)] == ["delivered", "pending", "pending"]
    assert [a for _, _, a in rows(engine)] == [0, 1, 0]
