"""What new-chapter detection costs MangaDex: first sight of many manga, and polls every
minute against every 15 minutes with the same traffic. Requests are counted by the
simulator over real HTTP; polls are replayed at past instants (`end=T`), as in production."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, update

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.tables import (
    chapter_baselines,
    chapters,
    manga,
    notification_outbox,
    sync_state,
)
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.sync.catalogue import SILENT, import_ids
from mangasync_pipeline.sync.chapters import ChapterReport, sync_chapter_window
from mangasync_pipeline_tests.sync_helpers import client_for, outbox_rows, settings_for

LOOKBACK = timedelta(hours=1)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def poll_at(engine: Engine, client: MangaDexClient, moment: datetime,
            admin: SimulatorAdmin | None = None) -> ChapterReport:
    """The scheduled poll of `moment`'s day, run as at `moment` (with `admin`, on MangaDex's
    side too: what is published later is not listed yet)."""
    if admin is not None:
        admin.set_clock_offset((moment - datetime.now(UTC)).total_seconds())
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return sync_chapter_window(engine, client, ("en",), day, moment, lookback=LOOKBACK)


@pytest.fixture
def quiet_sim() -> Iterator[Simulator]:
    """200 manga whose generated history ended a month ago: no chapter of theirs is
    readable in the windows below unless a test adds it."""
    end = utcnow() - timedelta(days=30)
    with Simulator(seed=23, manga_count=200, rate_limit=None, chapters_per_manga=6,
                   start=end - timedelta(days=700), end=end) as sim:
        yield sim


def requests(admin: SimulatorAdmin) -> int:
    return int(admin.stats()["total"])


def test_first_sight_costs_one_request_per_newly_active_manga(
        db_url: str, engine: Engine, quiet_sim: Simulator) -> None:
    settings = settings_for(db_url, quiet_sim.url)
    ids = sorted(quiet_sim.catalogue.manga)
    now = utcnow().replace(microsecond=0)
    with client_for(settings) as client, SimulatorAdmin(quiet_sim.url) as admin:
        import_ids(engine, client, ids, policy=SILENT)
        with engine.begin() as conn:
            conn.execute(update(manga).values(catalogued_at=now - timedelta(days=1)))
        # The schedule was running; its parked-link and late reads are not due again within
        # a step (15 minutes), so this poll's own cost is its edge read.
        poll_at(engine, client, now - timedelta(minutes=12))
        admin.add_chapters([{"manga": m, "chapter": "5000", "group": "First Sight Scans",
                             "createdAt": iso(now - timedelta(minutes=10, seconds=-i))}
                            for i, m in enumerate(ids)])
        admin.reset_stats()
        poll_at(engine, client, now)
        spent = admin.stats()["requests"]
    # One feed view per newly active manga (none has a link chapter, so no parked-link
    # view), and the 200 new chapters in two /chapter pages: the second page goes on by
    # offset and its `total` says the list ends there.
    assert spent["/manga/{id}/feed"] == 200
    assert spent["/chapter"] == 2 and sum(spent.values()) == 202
    assert len(outbox_rows(engine, "new-chapter")) == 200


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in (notification_outbox, chapters, chapter_baselines, sync_state):
            conn.execute(delete(table))


def test_polling_every_minute_costs_at_most_1_5x_polling_every_15_minutes(
        db_url: str, engine: Engine, quiet_sim: Simulator) -> None:
    """The same 90 minutes of traffic (4,000 English chapters an hour, mostly of manga
    outside the catalogue) polled every 15 minutes and every minute. A chapter stamped
    10 minutes in that shows up in the list only at minute 30 is found both ways."""
    settings = settings_for(db_url, quiet_sim.url)
    rng = random.Random(4)
    ids = sorted(quiet_sim.catalogue.manga)
    ours, others = ids[:20], ids[20:]
    t0 = (utcnow() - timedelta(hours=3)).replace(second=0, microsecond=0)
    with client_for(settings) as client, SimulatorAdmin(quiet_sim.url) as admin:
        import_ids(engine, client, ours, policy=SILENT)
        with engine.begin() as conn:
            conn.execute(update(manga).values(catalogued_at=t0 - timedelta(days=1)))
        traffic: list[dict[str, Any]] = []
        for i in range(6000):
            when = t0 + timedelta(seconds=rng.uniform(0, 90 * 60))
            target = ours[i % 20] if i % 30 == 0 else rng.choice(others)
            traffic.append({"manga": target, "chapter": str(6000 + i), "group": "Busy Scans",
                            "createdAt": iso(when)})
        admin.add_chapters(traffic)

        def replay(every: int, late_label: str) -> tuple[int, int]:
            """(requests, of which the late re-read's)"""
            _reset(engine)
            poll_at(engine, client, t0 - timedelta(minutes=1), admin)  # the schedule ran
            before = requests(admin)
            late = 0
            for minute in range(every, 91, every):
                if minute == 30 // every * every:
                    # Stamped at minute 10, in the list only from minute 30.
                    stamp = iso(t0 + timedelta(minutes=10))
                    admin.add_chapters([{"manga": ours[0], "chapter": late_label,
                                         "group": "Late Scans", "createdAt": stamp}])
                late += poll_at(engine, client, t0 + timedelta(minutes=minute),
                                admin).late_requests
            spent = requests(admin) - before
            admin.set_clock_offset(0)
            labels = {r.payload["label"] for r in outbox_rows(engine, "new-chapter")}
            assert late_label in labels, f"the late chapter was missed at {every}-minute polls"
            return spent, late

        quarterly, quarterly_late = replay(15, "99998")
        minutely, minutely_late = replay(1, "99999")
    assert minutely <= 1.5 * quarterly, (minutely, quarterly)
    # The lookback's own share: the same stretches re-read once, whatever the interval.
    assert minutely_late <= quarterly_late + 2, (minutely_late, quarterly_late)


def test_a_quiet_hour_polled_every_minute_costs_one_request_a_poll_and_the_step_reads(
        db_url: str, engine: Engine, quiet_sim: Simulator) -> None:
    """A chapter a minute, polled every minute for 45 minutes: each poll makes exactly one
    edge-or-late request (the late re-read, when due, reaches the end of the list and is
    that poll's edge read), and the parked-link read runs once per step (15 minutes), as at
    15-minute polls. So the lookback adds nothing to the one-request floor here."""
    settings = settings_for(db_url, quiet_sim.url)
    ids = sorted(quiet_sim.catalogue.manga)
    t0 = (utcnow() - timedelta(hours=2)).replace(second=0, microsecond=0)
    with client_for(settings) as client, SimulatorAdmin(quiet_sim.url) as admin:
        admin.add_chapters([{"manga": ids[20 + i], "chapter": str(7000 + i),
                             "group": "Quiet Scans",
                             "createdAt": iso(t0 + timedelta(seconds=60 * i + 30))}
                            for i in range(45)])
        poll_at(engine, client, t0 - timedelta(minutes=1), admin)  # the schedule ran
        reports = [poll_at(engine, client, t0 + timedelta(minutes=m), admin)
                   for m in range(1, 46)]
        admin.set_clock_offset(0)
    assert [r.edge_requests + r.late_requests for r in reports] == [1] * 45
    late_polls = [m for m, r in enumerate(reports, 1) if r.late_requests]
    parked_polls = [m for m, r in enumerate(reports, 1) if r.parked_requests]
    assert len(late_polls) == len(parked_polls) == 3, (late_polls, parked_polls)
    assert sum(r.parked_requests for r in reports) == 3
