"""`POST /notify/batch` on a live server, and the notifier draining the outbox through it."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.testing import (
    add_manga,
    add_users,
    fast_options,
    follow,
    server_settings,
)
from mangasync_pipeline.sync import outbox
from mangasync_pipeline.sync.notifier import Notifier
from mangasync_pipeline.tls import tls_context
from mangasync_pipeline_tests import web
from mangasync_pipeline_tests.receiver import Receiver


def _chapter(manga_id: int, number: Any, key: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "new-chapter", "manga_id": manga_id, "title": "T", "chapter": number,
            "dedup_key": key, **extra}


def test_each_trigger_of_a_batch_has_its_own_result(server: ServerHandle,
                                                    engine: Engine) -> None:
    manga_id = add_manga(engine)
    [(reader, _, _)] = add_users(engine, 1)
    follow(engine, [reader], manga_id)
    url = f"{server.http_url}/notify/batch"
    first = web.post(url, json={"triggers": [_chapter(manga_id, 1, "c1")]}).json()
    r = web.post(url, json={"triggers": [
        _chapter(manga_id, 2, "c2", label="2a"),
        _chapter(manga_id, 1, "c1"),  # seen in the earlier batch
        _chapter(manga_id, "٣", "c3"),  # not ASCII digits
        _chapter(999_999, 4, "c4"),
        {"kind": "new-volume", "manga_id": manga_id, "title": "T"},
        _chapter(manga_id, 2, "c2", label="2a"),  # seen earlier in this batch
        {"kind": "manga-update", "manga_id": manga_id, "title": "T", "message": "completed",
         "dedup_key": "u1"},
    ]})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["result"] for x in results] == [
        "accepted", "duplicate", "invalid", "unknown manga", "invalid", "duplicate", "accepted"]
    assert results[1]["notification_ids"] == first["results"][0]["notification_ids"]
    assert results[2]["error"].startswith("triggers.2.chapter: ")
    assert "ASCII" in results[2]["error"]
    assert results[4]["error"].startswith("triggers.4.kind: ")
    assert results[5]["notification_ids"] == results[0]["notification_ids"]
    assert [x.get("dedup_key") for x in results][:4] == ["c2", "c1", "c3", "c4"]
    assert r.json()["counts"] == {"accepted": 2, "duplicate": 2, "invalid": 2,
                                  "unknown manga": 1}
    with engine.connect() as conn:
        rows = conn.execute(select(t.notifications.c.type, t.notifications.c.chapter,
                                   t.notifications.c.label)
                            .order_by(t.notifications.c.id)).all()
    assert [tuple(row) for row in rows] == [("NEW_CHAPTER", "1", None),
                                           ("NEW_CHAPTER", "2", "2a"),
                                           ("MANGA_UPDATE", None, None)]


@pytest.mark.parametrize("body, error", [
    ({"triggers": []}, "triggers: must not be empty"),
    ({"triggers": [{}] * 501}, "triggers: more than 500 items"),
    ({"triggers": "x"}, "triggers: must be a list"),
    ({}, "triggers: required"),
])
def test_a_malformed_batch_is_one_400_naming_the_field(server: ServerHandle, engine: Engine,
                                                       body: dict[str, Any], error: str) -> None:
    r = web.post(f"{server.http_url}/notify/batch", json=body)
    assert r.status_code == 400 and r.json() == {"error": error}


def test_chapter_numbers_are_ascii_digits_and_labels_travel(server: ServerHandle,
                                                            engine: Engine) -> None:
    manga_id = add_manga(engine)
    url = f"{server.http_url}/notify/new-chapter"
    for number in ("٣", "３", "1.٥", "²"):
        r = web.post(url, json={"manga_id": manga_id, "title": "T", "chapter": number})
        assert r.status_code == 400 and r.json()["error"].startswith("chapter: "), number
    r = web.post(url, json={"manga_id": manga_id, "title": "T", "chapter": 10.5,
                              "label": "x" * 33})
    assert r.status_code == 400 and r.json()["error"] == "label: longer than 32 characters"
    assert web.post(url, json={"manga_id": manga_id, "title": "T", "chapter": "10.50",
                                 "label": "10.5"}).status_code == 202
    with engine.connect() as conn:
        assert conn.execute(select(t.notification_triggers.c.payload)).scalar_one()[
            "label"] == "10.5"


class _LoseFirstAnswer(httpx.BaseTransport):
    """Real HTTP to the server, but the answer to the first batch never arrives: the server
    committed it, the notifier sees a broken connection and must send it again."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport(verify=tls_context())
        self.batches = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/notify/batch":
            self.batches += 1
            if self.batches == 1:
                response.read()
                raise httpx.ReadError("connection lost before the answer", request=request)
        return response


def test_the_outbox_reaches_the_server_in_batches_in_order_exactly_once(
        server: ServerHandle, db_url: str, engine: Engine) -> None:
    manga_id = add_manga(engine)
    [(reader, _, _)] = add_users(engine, 1)
    follow(engine, [reader], manga_id)
    total = 1200  # three batches
    now = utcnow()
    with engine.begin() as conn:
        for n in range(total):
            outbox.enqueue(conn, outbox.NEW_CHAPTER, {"manga_id": manga_id, "title": "T",
                                                      "chapter": str(n + 1)}, f"ch:{n + 1}", now)
    transport = _LoseFirstAnswer()
    with Notifier(server.http_url, transport=transport) as notifier:
        first = notifier.deliver(engine, ignore_backoff=True)
        assert first.delivered == 0 and first.failed == 1 and first.pending == total
        again = notifier.deliver(engine, ignore_backoff=True)
    assert again.delivered == total and again.pending == 0 and again.rejected == 0
    assert transport.batches == 4  # the lost one, then three
    with engine.connect() as conn:
        chapters = conn.execute(select(t.notifications.c.chapter)
                                .order_by(t.notifications.c.id)).scalars().all()
        triggers = conn.execute(select(func.count()).select_from(t.notification_triggers)
                                ).scalar_one()
    assert chapters == [str(n + 1) for n in range(total)]  # in order, each once
    assert triggers == total


def test_a_server_without_the_batch_route_gets_one_request_per_notification(
        engine: Engine, receiver: Receiver) -> None:
    receiver.batch_route = False
    now = utcnow()
    with engine.begin() as conn:
        for n in range(3):
            outbox.enqueue(conn, outbox.NEW_MANGA, {"manga_id": n + 1, "title": f"M{n}"},
                           f"m:{n}", now)
    with Notifier(receiver.url) as notifier:
        report = notifier.deliver(engine)
    assert report.delivered == 3 and report.pending == 0
    assert [body["dedup_key"] for _, body in receiver.accepted] == ["m:0", "m:1", "m:2"]
    assert receiver.requests == 3  # one each, after the batch route answered 404


def test_a_stream_of_triggers_refreshes_statistics_as_the_table_grows(pg_url: str) -> None:
    """PostgreSQL plans the suppression check from table statistics, so the server refreshes
    them while the table grows, but in proportion to its size, not every 1,000 rows (an
    ANALYZE every 100 triggers of 10 followers was about half of PostgreSQL's CPU)."""
    engine = make_engine(pg_url)
    manga_id = add_manga(engine)
    follow(engine, [u for u, _, _ in add_users(engine, 50)], manga_id)

    def analyzed() -> tuple[int, float]:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            return conn.exec_driver_sql(
                "SELECT s.analyze_count + s.autoanalyze_count, c.reltuples "
                "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
                "WHERE s.relname = 'notifications'").one()

    before, _ = analyzed()
    with ServerHandle(server_settings(pg_url), fast_options()) as server, \
            web.Client(base_url=server.http_url) as http:
        for n in range(400):  # 20,000 notifications, one trigger at a time
            r = http.post("/notify/new-chapter", json={"manga_id": manga_id, "title": "T",
                                                       "chapter": n + 1})
            assert r.status_code == 202, r.text
        deadline = time.monotonic() + 10
        while True:  # the last refresh runs in the background; statistics arrive within 1 s
            count, rows = analyzed()
            if rows >= 15_000 or time.monotonic() > deadline:
                break
    engine.dispose()
    # Refreshes at 1,000-row steps up to 4,000 rows, then each time the table grew by a
    # quarter: about 11 for 20,000 rows, where a fixed step made 20.
    assert 5 <= count - before <= 12
    assert rows >= 15_000  # the planner knows the table within a quarter of its size
