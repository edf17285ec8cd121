"""Catalogue sync end to end: simulator over HTTP, real database, real HTTP receiver."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mangasync_pipeline.db.tables import genres, manga, manga_genres, notification_outbox
from mangasync_pipeline.mangadex.mapping import manga_row
from mangasync_pipeline.mangadex.models import parse_manga
from mangasync_pipeline.mangadex.simulator import Simulator
from mangasync_pipeline.sync.catalogue import SILENT, import_created_range, initial_sync
from mangasync_pipeline.sync.notifier import Notifier
from mangasync_pipeline_tests import web
from mangasync_pipeline_tests.receiver import Receiver
from mangasync_pipeline_tests.sync_helpers import (
    Pipeline,
    client_for,
    count,
    outbox_rows,
    settings_for,
)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=7, manga_count=400, rate_limit=None, chapters_per_manga=2) as s:
        yield s


def admin(sim: Simulator, method: str, path: str, body: Any = None) -> Any:
    response = web.request(method, f"{sim.url}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def add_manga(sim: Simulator, n: int, **fields: Any) -> list[str]:
    """`n` manga visible to MangaDex's default content ratings (the catalogue's view)."""
    return [admin(sim, "POST", "/_sim/manga", {"contentRating": "safe", **fields})["ids"][0]
            for _ in range(n)]


def visible_total(sim: Simulator, since: str) -> int:
    return int(admin(sim, "GET", f"/manga?createdAtSince={since}&limit=0")["total"])


def mangadex_requests(sim: Simulator, endpoint: str = "/manga") -> int:
    return int(admin(sim, "GET", "/_sim/stats")["requests"].get(endpoint, 0))


def test_initial_sync_of_200_costs_two_requests_and_stores_exact_rows(
        sim: Simulator, db_url: str, engine: Engine) -> None:
    settings = settings_for(db_url, sim.url)
    admin(sim, "POST", "/_sim/stats/reset")
    with client_for(settings) as client:
        result = initial_sync(engine, client, 200)
    assert mangadex_requests(sim) == 2
    assert admin(sim, "GET", "/_sim/stats")["total"] == 2
    assert count(engine, manga) == 200 == result.catalogue.inserted
    assert outbox_rows(engine) == []  # the initial sync notifies no one

    with engine.connect() as conn:
        rows = {r.mangadex_id: r for r in conn.execute(select(manga)).all()}
        linked = conn.execute(select(manga.c.mangadex_id, genres.c.name).select_from(
            manga_genres.join(manga).join(genres))).all()
    newest = admin(sim, "GET", "/manga?order[createdAt]=desc&limit=100&includes[]=author"
                   "&includes[]=artist&includes[]=cover_art")["data"]
    for raw in newest[::17]:  # spot-check field by field against the simulator's own record
        record = admin(sim, "GET", f"/_sim/manga/{raw['id']}")["manga"]
        expected = manga_row(parse_manga(record), settings.mangadex_uploads_url)
        row = rows[raw["id"]]
        assert row.title == expected.title
        assert row.author == expected.author
        assert row.status == record["attributes"]["status"]
        assert row.total_chapters == expected.total_chapters
        assert row.description == expected.description
        assert row.cover_url == expected.cover_url
        assert row.created_at == expected.created_at
        assert {g for m, g in linked if m == raw["id"]} == set(expected.genres)
    slugs = [r.slug for r in rows.values()]
    assert len(set(slugs)) == 200 and all(slugs)

    # It runs once unless forced.
    spent = mangadex_requests(sim)
    with client_for(settings) as client:
        again = initial_sync(engine, client, 200)
    assert again.skipped and mangadex_requests(sim) == spent


def test_new_manga_are_detected_by_the_sensor_and_announced_once(
        sim: Simulator, db_url: str, engine: Engine, receiver: Receiver) -> None:
    settings = settings_for(db_url, sim.url, receiver.url)
    pipeline = Pipeline(settings)
    pipeline.run("initial_sync_job")
    assert count(engine, manga) == 200
    assert pipeline.run_requests(pipeline.evaluate_sensor("new_manga_sensor"),
                                 "catalogue_job") == []

    added = add_manga(sim, 3)
    one = add_manga(sim, 1, title={"en": "Brand New Hero"})
    requests = pipeline.evaluate_sensor("new_manga_sensor")
    assert len(requests) == 1  # all created today: one partition, one run
    assert requests[0].partition_key == datetime.now(UTC).date().isoformat()
    pipeline.run_requests(requests, "catalogue_job")

    announced = receiver.of_kind("new-manga")
    assert sorted(a["dedup_key"] for a in announced) == sorted(
        f"new-manga:{i}" for i in added + one)
    assert "Brand New Hero" in {a["title"] for a in announced}
    with engine.connect() as conn:
        local = conn.execute(select(manga.c.id).where(manga.c.mangadex_id == one[0])).scalar()
    assert {"manga_id": local, "title": "Brand New Hero"}.items() <= next(
        a for a in announced if a["dedup_key"] == f"new-manga:{one[0]}").items()

    # Evaluating again, and re-running what was requested, adds and notifies nothing.
    assert pipeline.evaluate_sensor("new_manga_sensor") == []
    pipeline.run_requests(requests, "catalogue_job")
    pipeline.run("catalogue_job", partition_key=requests[0].partition_key)
    assert count(engine, manga) == 204
    assert len(receiver.accepted) == 4 and receiver.posts == 4
    assert len(outbox_rows(engine)) == 4


def test_status_and_title_changes_notify_library_users_once(
        sim: Simulator, db_url: str, engine: Engine, receiver: Receiver) -> None:
    pipeline = Pipeline(settings_for(db_url, sim.url, receiver.url))
    pipeline.run("initial_sync_job")
    pipeline.evaluate_sensor("new_manga_sensor")
    with engine.connect() as conn:
        target, old_status = conn.execute(
            select(manga.c.mangadex_id, manga.c.status).where(manga.c.status != "completed")
            .limit(1)).one()
    admin(sim, "PATCH", f"/_sim/manga/{target}", {"status": "completed"})
    requests = pipeline.evaluate_sensor("new_manga_sensor")
    assert [r.job_name for r in requests] == ["refresh_manga_job"]
    pipeline.run_requests(requests)
    updates = receiver.of_kind("manga-update")
    assert len(updates) == 1 and updates[0]["message"] == "Status: completed"
    with engine.connect() as conn:
        assert conn.execute(select(manga.c.status).where(
            manga.c.mangadex_id == target)).scalar() == "completed"
    assert receiver.of_kind("new-manga") == []
    pipeline.run_requests(requests)
    assert pipeline.evaluate_sensor("new_manga_sensor") == []
    assert len(receiver.accepted) == 1

    # A second change of the same manga is a new run (not a run key already used). MangaDex
    # stamps updatedAt to the second: this change is stamped a second after the first.
    first = admin(sim, "GET", f"/manga/{target}")["data"]["attributes"]["updatedAt"]
    later = datetime.fromisoformat(first) + timedelta(seconds=1)
    admin(sim, "PATCH", f"/_sim/manga/{target}", {"title": {"en": "Renamed Saga"},
                                                   "updatedAt": later.isoformat()})
    again = pipeline.evaluate_sensor("new_manga_sensor")
    assert again[0].run_key != requests[0].run_key
    pipeline.run_requests(again)
    assert [u["message"] for u in receiver.of_kind("manga-update")][1].startswith(
        "Title: Renamed Saga")
    assert len(receiver.accepted) == 2


def test_rematerializing_a_partition_changes_and_notifies_nothing(
        sim: Simulator, db_url: str, engine: Engine, receiver: Receiver) -> None:
    pipeline = Pipeline(settings_for(db_url, sim.url, receiver.url))
    day = admin(sim, "POST", "/_sim/manga", {"count": 30, "day": "2024-03-05"})
    assert len(day["ids"]) == 30
    first = pipeline.run("catalogue_job", partition_key="2024-03-05")
    assert first.success
    with engine.connect() as conn:
        snapshot = conn.execute(select(manga).order_by(manga.c.id)).all()
    visible = visible_total(sim, "2024-03-05T00:00:00") - visible_total(sim, "2024-03-06T00:00:00")
    assert len([r for r in snapshot if r.created_at.date().isoformat() == "2024-03-05"]) == visible
    assert visible >= 25
    pipeline.run("catalogue_job", partition_key="2024-03-05")
    with engine.connect() as conn:
        again = conn.execute(select(manga).order_by(manga.c.id)).all()
    strip = lambda rows: [(r.id, r.slug, r.title, r.updated_at) for r in rows]  # noqa: E731
    assert strip(again) == strip(snapshot)
    assert receiver.posts == 0 and outbox_rows(engine) == []


def test_a_dead_notification_server_loses_nothing_and_blocks_no_sync(
        sim: Simulator, db_url: str, engine: Engine, receiver: Receiver) -> None:
    settings = settings_for(db_url, sim.url, receiver.url)
    pipeline = Pipeline(settings)
    pipeline.run("initial_sync_job")
    pipeline.evaluate_sensor("new_manga_sensor")
    receiver.mode = "error"
    ids = add_manga(sim, 2)
    results = pipeline.run_requests(pipeline.evaluate_sensor("new_manga_sensor"),
                                    "catalogue_job")
    assert all(r.success for r in results)
    assert count(engine, manga) == 202
    assert [r.status for r in outbox_rows(engine)] == ["pending", "pending"]
    assert pipeline.evaluate_sensor("notification_outbox_sensor") == []  # backing off

    receiver.mode = "ok"
    with Notifier(receiver.url) as notifier:
        report = notifier.deliver(engine, ignore_backoff=True)
    assert report.delivered == 2 and report.pending == 0
    assert sorted(body["dedup_key"] for _, body in receiver.accepted) == sorted(
        f"new-manga:{i}" for i in ids)


def _import_then_hang(db_url: str, sim_url: str, server_url: str, day: str) -> None:
    """A run that commits and then dies while handing its notifications over."""
    settings = settings_for(db_url, sim_url, server_url)
    from mangasync_pipeline.db.engine import make_engine
    from mangasync_pipeline.sync.catalogue import import_ids
    from mangasync_pipeline.sync.catalogue_store import NotifyPolicy

    engine = make_engine(db_url)
    with client_for(settings) as client:
        ids = [m.id for p in client.iter_manga_pages(
            "createdAt", datetime.fromisoformat(day + "T00:00:00+00:00")) for m in p.items]
        import_ids(engine, client, ids, policy=NotifyPolicy(new_manga=True))
    with Notifier(server_url, timeout=60) as notifier:
        notifier.deliver(engine)


def test_a_run_killed_between_commit_and_delivery_is_delivered_later_once(
        sim: Simulator, db_url: str, engine: Engine, receiver: Receiver) -> None:
    ids = add_manga(sim, 2)
    receiver.mode = "hang"
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_import_then_hang,
                       args=(db_url, sim.url, receiver.url, datetime.now(UTC).date().isoformat()))
    proc.start()
    deadline = time.monotonic() + 60
    while receiver.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.requests == 1, "the run never reached delivery"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert {r.status for r in outbox_rows(engine)} == {"pending"}
    assert len(outbox_rows(engine)) >= 2 and receiver.accepted == []

    receiver.mode = "ok"
    with Notifier(receiver.url) as notifier:
        notifier.deliver(engine)
        notifier.deliver(engine)
    keys = [body["dedup_key"] for _, body in receiver.accepted]
    assert {f"new-manga:{i}" for i in ids} <= set(keys)
    assert len(keys) == len(set(keys))
    with engine.connect() as conn:
        assert set(conn.execute(select(notification_outbox.c.status)).scalars()) == {"delivered"}


def test_a_partition_of_over_10000_manga_imports_completely(
        db_url: str, engine: Engine) -> None:
    with Simulator(seed=3, manga_count=10, rate_limit=None, chapters_per_manga=0) as big:
        added = admin(big, "POST", "/_sim/manga", {"count": 10_600, "day": "2023-07-14"})["ids"]
        visible = visible_total(big, "2023-07-14T00:00:00") - visible_total(
            big, "2023-07-15T00:00:00")
        settings = settings_for(db_url, big.url)
        start = datetime(2023, 7, 14, tzinfo=UTC)
        with client_for(settings) as client:
            report = import_created_range(engine, client, start, start + timedelta(days=1),
                                          policy=SILENT)
        stats = admin(big, "GET", "/_sim/stats")
    assert visible > 10_000  # pornographic ones are hidden by MangaDex's default, as live
    with engine.connect() as conn:
        stored = set(conn.execute(select(manga.c.mangadex_id)).scalars())
    assert len(stored) == visible == report.inserted
    assert len(set(added) & stored) >= visible - 10  # the base catalogue may share the day
    assert stats["by_status"].get("400", 0) == 0
    # The floor is one request per 100; keyset pages overlap by the ids sharing a boundary second.
    assert stats["requests"]["/manga"] <= visible * 1.05 / 100 + 2


def test_the_sensor_waits_while_the_initial_sync_runs(
        sim: Simulator, db_url: str, engine: Engine) -> None:
    from mangasync_pipeline.sync import state

    pipeline = Pipeline(settings_for(db_url, sim.url))
    state.mark_running(engine, state.INITIAL_SYNC)
    add_manga(sim, 1)
    assert pipeline.evaluate_sensor("new_manga_sensor") == []
    assert count(engine, manga) == 0
    assert mangadex_requests(sim) == 0


def test_delivery_is_one_process_at_a_time_and_a_stray_404_is_retried(
        db_url: str, engine: Engine, receiver: Receiver) -> None:
    from mangasync_pipeline.config import utcnow
    from mangasync_pipeline.sync import outbox
    from mangasync_pipeline.sync.notifier import single_deliverer

    with engine.begin() as conn:
        for n in range(3):
            outbox.enqueue(conn, outbox.NEW_MANGA, {"manga_id": n, "title": f"T{n}"},
                           f"new-manga:{n}", utcnow())
    with single_deliverer(engine) as first, Notifier(receiver.url) as notifier:
        assert first
        busy = notifier.deliver(engine)  # another deliverer holds the queue: nothing sent
        assert busy.delivered == 0 and busy.pending == 3 and receiver.posts == 0

    # A 404 that is not the server's own answer (a wrong URL, a proxy) keeps the entry.
    with Notifier(receiver.url + "/wrong-prefix") as misconfigured:
        report = misconfigured.deliver(engine)
    assert report.rejected == 0 and report.pending == 3
    with Notifier(receiver.url) as notifier:
        done = notifier.deliver(engine, ignore_backoff=True)
    assert done.delivered == 3
    assert [b["title"] for _, b in receiver.accepted] == ["T0", "T1", "T2"]  # in order


@pytest.mark.process
def test_an_unmigrated_database_fails_runs_and_sensors_in_one_line(
        sim: Simulator, tmp_path: Any) -> None:
    pipeline = Pipeline(settings_for(f"sqlite:///{tmp_path / 'empty.sqlite'}", sim.url))
    assert pipeline.evaluate_sensor("new_manga_sensor") == []
    result = pipeline.run("initial_sync_job", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert "run `mangasync migrate` first" in message and "\n" not in message
