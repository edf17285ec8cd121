"""New-chapter rules (CONTRACTS.md "When users are notified"), one test per rule, over the
simulator's real HTTP API and a real database."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, insert, select, update

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.tables import chapter_baselines, chapters, manga
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.mangadex.models import Chapter, parse_chapter_number
from mangasync_pipeline.mangadex.simulator import Simulator
from mangasync_pipeline.sync.catalogue import SILENT, import_ids
from mangasync_pipeline.sync.chapter_reads import LATE, Read, plan_reads
from mangasync_pipeline.sync.chapters import (
    ChapterReport,
    process_chapters,
    sync_chapter_window,
)
from mangasync_pipeline.sync.manga_sync import sync_one
from mangasync_pipeline.sync.notifier import Notifier
from mangasync_pipeline_tests import web
from mangasync_pipeline_tests.receiver import Receiver
from mangasync_pipeline_tests.sync_helpers import Pipeline, client_for, outbox_rows, settings_for

LOOKBACK = timedelta(hours=1)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@dataclass
class World:
    sim: Simulator
    engine: Engine
    client: MangaDexClient
    db_url: str

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = web.request(method, f"{self.sim.url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def add_manga(self, title: str, *, history: int = 0, language: str = "en",
                  catalogue: bool = True, last_chapter: str = "", rating: str = "safe") -> str:
        """A manga created a year ago with `history` chapters published before today."""
        created = utcnow() - timedelta(days=365)
        mid = self.admin("POST", "/_sim/manga", {
            "title": {"en": title}, "createdAt": iso(created), "contentRating": rating,
            "lastChapter": last_chapter})["ids"][0]
        if history:
            self.add_chapters(mid, [(str(n), created + timedelta(days=n)) for n in
                                    range(1, history + 1)], language=language)
        if catalogue:
            import_ids(self.engine, self.client, [mid], policy=SILENT)
        return mid

    def add_chapters(self, manga_id: str, specs: list[tuple[str | None, datetime | None]], *,
                     language: str = "en", group: str = "Alpha Scans",
                     **extra: Any) -> list[str]:
        body = []
        for label, when in specs:
            spec: dict[str, Any] = {"manga": manga_id, "chapter": label, "language": language,
                                    "group": group, **extra}
            if when is not None:
                spec.update(createdAt=iso(when), publishAt=iso(when))
            body.append(spec)
        return self.admin("POST", "/_sim/chapters", body)["ids"]

    def poll(self, start: datetime | None = None, end: datetime | None = None,
             languages: tuple[str, ...] = ("en",), *, use_cursor: bool = True
             ) -> ChapterReport:
        """A scheduled poll of today (from the cursor), or a backfill of [start, end). Near
        midnight the poll also covers yesterday, as the schedule's first tick of a day does,
        so chapters a test placed a little in the past are in its window at any hour."""
        now = datetime.now(UTC)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        first = min(today, (now - 2 * LOOKBACK).replace(hour=0, minute=0, second=0,
                                                        microsecond=0))
        return sync_chapter_window(self.engine, self.client, languages, start or first,
                                   end or today + timedelta(days=2), lookback=LOOKBACK,
                                   use_cursor=use_cursor)

    def new_chapter_keys(self) -> list[str]:
        return [r.dedup_key for r in outbox_rows(self.engine, "new-chapter")]

    def payloads(self) -> list[dict[str, Any]]:
        return [r.payload for r in outbox_rows(self.engine, "new-chapter")]

    def requests(self) -> dict[str, int]:
        return dict(self.admin("GET", "/_sim/stats")["requests"])


@pytest.fixture
def world(db_url: str, engine: Engine) -> Iterator[World]:
    with Simulator(seed=11, manga_count=5, rate_limit=None, chapters_per_manga=0) as sim:
        settings = settings_for(db_url, sim.url)
        with client_for(settings) as client:
            yield World(sim, engine, client, db_url)


def test_history_of_a_manga_with_empty_last_chapter_never_notifies(world: World) -> None:
    """150 chapters, all published in the poll's window but before the manga was catalogued:
    the seed's rule (number > total_chapters, with total_chapters empty) would announce all."""
    mid = world.add_manga("Long Runner", catalogue=False, last_chapter="")
    recent = utcnow() - timedelta(minutes=50)
    world.add_chapters(mid, [(str(n), recent + timedelta(seconds=10 * n))
                             for n in range(1, 151)])
    import_ids(world.engine, world.client, [mid], policy=SILENT)
    report = world.poll()
    assert report.stored == 150 and report.history == 150
    assert world.new_chapter_keys() == [] and report.notifications == 0
    with world.engine.connect() as conn:
        total = conn.execute(select(manga.c.total_chapters).where(
            manga.c.mangadex_id == mid)).scalar()
    assert total == 150  # empty lastChapter, but the stored chapters tell the count


def test_181_then_late_180_5_then_182_from_two_groups(world: World) -> None:
    mid = world.add_manga("Numbers", history=180)
    world.add_chapters(mid, [("181", None)])
    first = world.poll()
    # One feed request (its default view: no link chapter in sight) learns 180 is history.
    assert first.baseline_requests == 1
    assert [p["chapter"] for p in world.payloads()] == ["181"]

    # 180.5 was never stored and is above the baseline: new, although 181 came first.
    world.add_chapters(mid, [("180.5", None)])
    world.poll()
    assert [p["chapter"] for p in world.payloads()] == ["181", "180.5"]

    world.add_chapters(mid, [("182", None)], group="Alpha Scans")
    world.add_chapters(mid, [("182", None)], group="Beta Scans")
    third = world.poll()
    assert third.baseline_requests == 0
    assert [p["chapter"] for p in world.payloads()] == ["181", "180.5", "182"]
    with world.engine.connect() as conn:
        stored = conn.execute(select(chapters.c.label).where(
            chapters.c.label.in_(["180.5", "181", "182"]))).scalars().all()
        total = conn.execute(select(manga.c.total_chapters).where(
            manga.c.mangadex_id == mid)).scalar()
    assert sorted(stored) == ["180.5", "181", "182", "182"]  # every group's upload is stored
    assert total == 182


def test_a_reupload_of_an_old_number_notifies_no_one(world: World) -> None:
    mid = world.add_manga("Reuploads", history=20)
    world.add_chapters(mid, [("10", None)], group="Uncensored Scans")
    report = world.poll()
    assert world.new_chapter_keys() == [] and report.stored == 1


def test_a_oneshot_and_an_extra_notify_without_a_number(world: World) -> None:
    mid = world.add_manga("Shorts", history=3)
    world.add_chapters(mid, [(None, None)])
    world.add_chapters(mid, [("EXTRA", None)], group="Other")
    world.poll()
    # Both may become readable in the same second, where MangaDex lists them by id: each is
    # announced once, in either order.
    announced = [(p["chapter"], p["label"]) for p in world.payloads()]
    assert sorted(announced, key=str) == [(None, "EXTRA"), (None, None)]
    assert len(set(world.new_chapter_keys())) == 2


def test_a_lettered_label_travels_and_orders_as_its_number(world: World) -> None:
    mid = world.add_manga("Letters", history=11)
    world.add_chapters(mid, [("12", None)])
    world.poll()
    world.add_chapters(mid, [("12a", None)])
    world.add_chapters(mid, [("12a", None)], group="Other Scans")
    world.poll()
    assert [(p["chapter"], p["label"]) for p in world.payloads()] == [("12", "12"),
                                                                      ("12", "12a")]
    assert world.new_chapter_keys()[1].endswith(":en:12a")
    with world.engine.connect() as conn:
        rows = conn.execute(select(chapters.c.label, chapters.c.chapter_number,
                                   chapters.c.notified)
                            .where(chapters.c.label.in_(["12", "12a"]))).all()
    assert sorted((r.label, r.notified) for r in rows) == [("12", True), ("12a", False),
                                                           ("12a", True)]
    assert {Decimal(r.chapter_number) for r in rows} == {Decimal(12)}


def test_chapters_in_other_languages_are_ignored(world: World) -> None:
    mid = world.add_manga("Polyglot", history=5)
    world.add_chapters(mid, [("6", None)], language="es")
    report = world.poll(languages=("en",))
    assert world.new_chapter_keys() == [] and report.stored == 0
    world.add_chapters(mid, [("6", None)], language="en")
    world.poll(languages=("en",))
    assert [(p["chapter"], p["language"]) for p in world.payloads()] == [("6", "en")]


def test_a_scheduled_chapter_is_notified_only_once_it_is_out(world: World) -> None:
    mid = world.add_manga("Scheduled", history=9)
    now = utcnow().replace(microsecond=0)
    world.admin("POST", "/_sim/chapters", [{"manga": mid, "chapter": "10", "language": "en",
                                            "createdAt": iso(now),
                                            "publishAt": iso(now + timedelta(hours=1))}])
    report = world.poll()
    assert report.stored == 0 and world.new_chapter_keys() == []
    world.admin("POST", "/_sim/clock", {"offset_seconds": 3700})
    world.poll()
    assert [p["chapter"] for p in world.payloads()] == ["10"]
    world.poll()
    assert len(world.new_chapter_keys()) == 1


def test_a_link_only_chapter_with_far_future_publish_at_is_notified(world: World) -> None:
    mid = world.add_manga("Official", history=4)
    world.admin("POST", "/_sim/chapters", [{
        "manga": mid, "chapter": "5", "language": "en", "pages": 0,
        "externalUrl": "https://publisher.example/ch5", "publishAt": "2037-12-31T00:00:00",
    }])
    world.poll()
    assert [p["chapter"] for p in world.payloads()] == ["5"]
    with world.engine.connect() as conn:
        row = conn.execute(select(chapters).where(chapters.c.label == "5")).one()
    assert row.external_url == "https://publisher.example/ch5"
    assert row.readable_at < utcnow() + timedelta(minutes=1)
    # Its publishAt (2037) does not become the cursor; the parked-link query is not due again
    # until a step (lookback / 4) has passed: the next poll costs one request.
    world.admin("POST", "/_sim/stats/reset")
    world.poll()
    assert world.requests()["/chapter"] == 1


def test_chapters_of_a_catalogued_manga_of_any_rating_are_seen(world: World) -> None:
    # MangaDex hides pornographic works unless asked; one that entered the catalogue by id
    # (a sensor run, sync-manga) must still have its chapters followed.
    mid = world.add_manga("Adult Title", history=2, rating="pornographic")
    world.add_chapters(mid, [("3", None)])
    world.poll()
    assert [p["chapter"] for p in world.payloads()] == ["3"]


def test_chapters_of_manga_outside_the_catalogue_are_skipped(world: World) -> None:
    outside = world.add_manga("Not Ours", history=2, catalogue=False)
    world.add_chapters(outside, [("3", None)])
    report = world.poll()
    assert report.not_catalogued == 1 and report.stored == 0
    assert world.new_chapter_keys() == []
    assert world.requests().get("/manga/{id}/feed", 0) == 0


def test_backfill_of_yesterday_after_an_outage_stores_and_notifies_each_once(
        world: World, receiver: Receiver) -> None:
    mid = world.add_manga("Outage", history=4)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    with world.engine.begin() as conn:  # catalogued before the outage began
        conn.execute(update(manga).where(manga.c.mangadex_id == mid)
                     .values(catalogued_at=yesterday - timedelta(days=2)))
    world.poll()  # the schedule is back: its cursor is now, yesterday was never read
    world.add_chapters(mid, [("5", yesterday + timedelta(hours=9)),
                             ("6", yesterday + timedelta(hours=15))])
    world.add_chapters(mid, [("6", yesterday + timedelta(hours=16))], group="Late Group")
    pipeline = Pipeline(settings_for(world.db_url, world.sim.url, receiver.url))
    backfill = pipeline.run("new_chapters_job", partition_key=yesterday.date().isoformat())
    meta = backfill.asset_materializations_for_node("new_chapters")[0].metadata
    assert meta["chapters_stored"].value == 3
    assert [b["chapter"] for b in receiver.of_kind("new-chapter")] == ["5", "6"]
    pipeline.run("new_chapters_job", partition_key=yesterday.date().isoformat())
    assert len(world.new_chapter_keys()) == 2 and receiver.posts == 2


def test_polls_read_from_their_cursors_and_re_read_each_stretch_once_when_settled() -> None:
    today = datetime(2026, 3, 2, tzinfo=UTC)
    end = today + timedelta(days=1)
    now = today + timedelta(minutes=20)
    cursors = {"publishAt": today - timedelta(minutes=1), "createdAt": today - timedelta(minutes=1),
               LATE: today - timedelta(hours=1, minutes=1)}
    # Across midnight: the edge resumes in yesterday; every stage is due after 21 minutes.
    assert plan_reads(cursors, today, end, now, LOOKBACK) == [
        Read(LATE, "publishAt", today - timedelta(hours=1, minutes=1), now - LOOKBACK,
             now - LOOKBACK),
        Read("publishAt", "publishAt", today - timedelta(minutes=1), end, now),
        Read("createdAt", "createdAt", today - timedelta(hours=1, minutes=1), end, now)]
    # A minute later only the edge is read: what it costs does not include the lookback.
    after = {**cursors, "publishAt": now, "createdAt": now, LATE: now - LOOKBACK}
    assert plan_reads(after, today, end, now + timedelta(minutes=1), LOOKBACK) == [
        Read("publishAt", "publishAt", now, end, now + timedelta(minutes=1))]
    # A backfill, or cursors from days ago, read the whole partition.
    assert {(r.query, r.since) for r in plan_reads(cursors, today, end, now, LOOKBACK,
                                                   use_cursor=False)} == {
        ("publishAt", today), ("createdAt", today)}
    stale = {"publishAt": today - timedelta(days=3), LATE: today - timedelta(days=3)}
    reads = plan_reads(stale, today, end, now, LOOKBACK)
    assert [(r.cursor, r.since) for r in reads if r.since < r.until] == [
        ("publishAt", today), ("createdAt", today)]
    # After an outage the late stage starts again from what this poll reads lookback-old.
    assert [r.done_to for r in reads if r.cursor == LATE] == [now - LOOKBACK]


def test_the_same_partition_through_dagster_reports_readable_metadata(
        world: World, receiver: Receiver) -> None:
    mid = world.add_manga("Via Dagster", history=7)
    world.add_chapters(mid, [("8", None)])
    pipeline = Pipeline(settings_for(world.db_url, world.sim.url, receiver.url))
    today = datetime.now(UTC).date().isoformat()
    result = pipeline.run("new_chapters_job", partition_key=today)
    materialization = result.asset_materializations_for_node("new_chapters")[0]
    meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    assert meta["chapters_stored"] == 1 and meta["notifications_queued"] == 1
    assert meta["mangadex_requests"] >= 2 and meta["outbox_delivered"] == 1
    assert [b["chapter"] for b in receiver.of_kind("new-chapter")] == ["8"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values())
    pipeline.run("new_chapters_job", partition_key=today)
    assert len(receiver.accepted) == 1


def _poll_then_deliver(db_url: str, sim_url: str, server_url: str) -> None:
    """A scheduled run: commit chapters and outbox, then hand them to the server."""
    from mangasync_pipeline.db.engine import make_engine

    settings = settings_for(db_url, sim_url, server_url)
    engine = make_engine(db_url)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with client_for(settings) as client:
        sync_chapter_window(engine, client, ("en",), today, today + timedelta(days=1),
                            lookback=LOOKBACK)
    with Notifier(server_url, timeout=60) as notifier:
        notifier.deliver(engine)


def test_a_crash_between_commit_and_delivery_delivers_later_once(
        world: World, receiver: Receiver) -> None:
    mid = world.add_manga("Crashy", history=2)
    world.add_chapters(mid, [("3", None)])
    receiver.mode = "hang"
    proc = multiprocessing.get_context("spawn").Process(
        target=_poll_then_deliver, args=(world.db_url, world.sim.url, receiver.url))
    proc.start()
    deadline = time.monotonic() + 60
    while receiver.posts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.posts == 1, "the run never reached delivery"
    os.kill(proc.pid, signal.SIGKILL)  # dies with the POST in flight, after its commit
    proc.join()
    assert [r.status for r in outbox_rows(world.engine)] == ["pending"]
    receiver.mode = "ok"
    with Notifier(receiver.url) as notifier:
        notifier.deliver(world.engine)
        notifier.deliver(world.engine)
    assert [b["chapter"] for b in receiver.of_kind("new-chapter")] == ["3"]
    assert receiver.posts == 2  # the one cut off, then the redelivery


def test_requests_per_poll_do_not_grow_with_the_catalogue(world: World) -> None:
    ids = [world.add_manga(f"Active {n}", history=3) for n in range(5)]

    def traffic(label: str) -> dict[str, int]:
        for mid in ids:
            world.add_chapters(mid, [(label, None)])
        world.admin("POST", "/_sim/stats/reset")
        world.poll()
        return {k: v for k, v in world.requests().items() if v}

    traffic("4")  # learns the five baselines once
    _pad_catalogue(world.engine, 200 - 5)
    small = traffic("5")
    _pad_catalogue(world.engine, 20_000 - 200)
    large = traffic("6")
    assert small == large == {"/chapter": 1}
    assert len(world.new_chapter_keys()) == 15


def _pad_catalogue(engine: Engine, n: int) -> None:
    """Catalogued manga without chapter traffic (their MangaDex side is irrelevant here)."""
    now = utcnow()
    with engine.begin() as conn:
        start = conn.execute(select(manga.c.id).order_by(manga.c.id.desc()).limit(1)).scalar()
        rows = [{"mangadex_id": f"00000000-0000-4000-8000-{start + i:012d}",
                 "slug": f"padding-{start + i}", "title": f"Padding {i}", "created_at": now,
                 "catalogued_at": now, "updated_at": now} for i in range(n)]
        for i in range(0, n, 5000):
            conn.execute(insert(manga), rows[i:i + 5000])


def test_sync_one_manga_reads_its_whole_feed_and_applies_the_same_rules(world: World) -> None:
    mid = world.add_manga("Single", history=30)
    world.add_chapters(mid, [("31", None), ("31", None)])
    found = sync_one(world.engine, world.client, mid, ("en",))
    assert found["chapters_stored"] == 32 and found["new_chapters"] == ["31"]
    # The manga, then its feed (500 per page): default view and link-only chapters.
    assert found["requests"] == 3
    again = sync_one(world.engine, world.client, mid, ("en",))
    assert again["chapters_stored"] == 0 and again["new_chapters"] == []
    assert len(world.new_chapter_keys()) == 1


def test_asset_checks_catch_broken_rows(world: World, receiver: Receiver) -> None:
    mid = world.add_manga("Checked", history=5)
    world.add_chapters(mid, [("6", None)])
    pipeline = Pipeline(settings_for(world.db_url, world.sim.url, receiver.url))
    today = datetime.now(UTC).date().isoformat()
    healthy = pipeline.run("new_chapters_job", partition_key=today)
    assert all(e.passed for e in healthy.get_asset_check_evaluations())
    with world.engine.begin() as conn:  # a count that fell behind the stored chapters
        conn.execute(update(manga).where(manga.c.mangadex_id == mid).values(total_chapters=1))
    broken = pipeline.run("new_chapters_job", partition_key=today)
    checks = {e.check_name: e for e in broken.get_asset_check_evaluations()}
    assert not checks["total_chapters_not_below_stored"].passed
    assert checks["total_chapters_not_below_stored"].metadata["manga_behind"].value == 1
    assert checks["chapters_of_catalogued_manga"].passed


# --- order independence and query counts on both databases -----------------------------------

def _catalogued(engine: Engine, mangadex_id: str, catalogued_at: datetime,
                baseline: str | None) -> int:
    """A catalogued manga whose baseline is known (so no feed request is needed)."""
    with engine.begin() as conn:
        mid = conn.execute(insert(manga).values(
            mangadex_id=mangadex_id, slug=f"m-{mangadex_id[:8]}", title="Order",
            created_at=catalogued_at, catalogued_at=catalogued_at, updated_at=catalogued_at)
        ).inserted_primary_key[0]
        conn.execute(insert(chapter_baselines).values(
            manga_id=mid, translated_language="en", max_number=baseline,
            checked_at=catalogued_at))
    return mid


def _traffic(mangadex_id: str, catalogued_at: datetime) -> list[Chapter]:
    def one(n: int, label: str | None, minutes: int, group: str = "a") -> Chapter:
        when = catalogued_at + timedelta(minutes=minutes)
        return Chapter(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{mangadex_id}/{n}")),
                       manga_id=mangadex_id, chapter=label,
                       number=parse_chapter_number(label), volume=None, title=None,
                       translated_language="en", pages=20, external_url=None,
                       is_unavailable=False, publish_at=when, readable_at=when,
                       created_at=when, updated_at=when, group_ids=(group,))
    # All readable in the same second where it matters: ties that the seed broke by id.
    # 160.1234 has more decimals than chapter_number keeps: its re-upload is still known.
    return [one(0, "151", 1), one(1, "150.5", 1), one(2, "150.5", 1, "b"), one(3, "149", 1),
            one(4, "152", 2), one(5, "12a", 2), one(6, None, 2), one(7, "148", -5),
            one(8, "153", 3), one(9, "153", 3, "c"), one(10, "151", 4, "d"),
            one(11, "160.1234", 5), one(12, "160.1234", 9, "e")]


def test_shuffled_and_split_batches_announce_the_same_on_the_database(engine: Engine) -> None:
    rng = random.Random(3)
    catalogued_at = utcnow().replace(microsecond=0) - timedelta(days=1)
    for run in range(9):
        mangadex_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"order/{run}"))
        _catalogued(engine, mangadex_id, catalogued_at, "150")
        traffic = rng.sample(_traffic(mangadex_id, catalogued_at), 13)
        parts = run % 3 + 1  # one, two or three polls
        cuts = sorted(rng.sample(range(1, len(traffic)), parts - 1))
        for a, b in itertools.pairwise([0, *cuts, len(traffic)]):
            process_chapters(engine, None, traffic[a:b], ("en",), ChapterReport())
        labels = [r.payload["label"] for r in outbox_rows(engine, "new-chapter")
                  if mangadex_id in r.dedup_key]
        assert sorted(labels, key=str) == ["150.5", "151", "152", "153", "160.1234", None], (
            run, parts)
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).where(
                chapters.c.label.is_not(None), chapters.c.manga_id.in_(select(manga.c.id).where(
                    manga.c.mangadex_id == mangadex_id)))).scalar() == 12


def test_a_batch_costs_the_same_queries_whatever_its_size(engine: Engine) -> None:
    catalogued_at = utcnow().replace(microsecond=0) - timedelta(days=1)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    def batch(tag: str, size: int) -> list[Chapter]:
        mangadex_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"queries/{tag}"))
        _catalogued(engine, mangadex_id, catalogued_at, "1000")
        when = catalogued_at + timedelta(minutes=5)
        # Re-uploads below the baseline: stored, none announced (no outbox insert per row).
        return [Chapter(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/{i}")),
                        manga_id=mangadex_id, chapter=str(i + 1), number=Decimal(i + 1),
                        volume=None, title=None, translated_language="en", pages=20,
                        external_url=None, is_unavailable=False, publish_at=when,
                        readable_at=when, created_at=when, updated_at=when)
                for i in range(size)]

    small, large = batch("small", 5), batch("large", 400)
    sizes = []
    event.listen(engine, "before_cursor_execute", count)
    try:
        for items in (small, large):
            statements.clear()
            report = ChapterReport()
            process_chapters(engine, None, items, ("en",), report)
            assert report.stored == len(items) and report.notifications == 0
            sizes.append(len(statements))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert sizes[0] == sizes[1], statements
