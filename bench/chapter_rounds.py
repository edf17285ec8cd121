"""Rounds of `bench_chapters.py --rounds`: first sight, poll frequency, shuffled ties.

Each round gets a fresh MangaHub database and a simulator whose generated history ended a
month ago, so only the chapters a round adds are readable in its windows. Polls are replayed
at past instants (`sync_chapter_window(..., end=T)`), as in the main benchmark. Request
counts come from the client's own statistics and do not depend on the machine's load.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import table, throwaway_db
from seed_polling import SeedPoller
from sqlalchemy import Engine, func, select, update

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.tables import manga, notification_outbox
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.sync.catalogue import SILENT, import_ids
from mangasync_pipeline.sync.chapters import sync_chapter_window

LOOKBACK = timedelta(hours=1)
# The design under test; `--design FILE` swaps in another version of sync/chapters.py.
SYNC: Callable[..., Any] = sync_chapter_window


def use_design(path: Path) -> None:
    """Run the rounds with the `sync_chapter_window` of another version of
    sync/chapters.py (e.g. `git show <rev>:mangasync_pipeline/sync/chapters.py`)."""
    global SYNC
    spec = importlib.util.spec_from_file_location("earlier_chapters", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--design: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    SYNC = module.sync_chapter_window


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@contextmanager
def world(backend: str, tmp: Path, manga_count: int, seed: int,
          catalogued: int) -> Iterator[tuple[Simulator, Engine, MangaDexClient, list[str]]]:
    """A quiet simulator, a fresh database and the first `catalogued` manga catalogued a day
    before the round (rated anything but pornographic, as backfills see them)."""
    end = datetime.now(UTC) - timedelta(days=30)
    with Simulator(seed=seed, manga_count=manga_count, rate_limit=None, chapters_per_manga=8,
                   start=end - timedelta(days=700), end=end) as sim, \
            throwaway_db(backend, tmp) as db, MangaDexClient(sim.url, rate_limit=None) as client:
        engine = make_engine(db)
        ids = sorted(m.id for m in sim.catalogue.manga.values()
                     if m.content_rating != "pornographic")
        import_ids(engine, client, ids[:catalogued], policy=SILENT)
        with engine.begin() as conn:
            conn.execute(update(manga).values(
                catalogued_at=datetime.now(UTC) - timedelta(days=1)))
        try:
            yield sim, engine, client, ids
        finally:
            engine.dispose()


def poll_at(engine: Engine, client: MangaDexClient, moment: datetime,
            admin: SimulatorAdmin | None = None, parts: Counter[str] | None = None
            ) -> dict[str, int]:
    """One scheduled poll as at `moment`; its requests by endpoint. With `admin`, the
    simulator's clock is set to `moment` too, so that what comes later is not listed yet.
    With `parts`, its requests are added there by purpose (`split_poll`)."""
    if admin is not None:
        admin.set_clock_offset((moment - datetime.now(UTC)).total_seconds())
    before = client.stats.snapshot()
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    report = SYNC(engine, client, ("en",), day, moment, lookback=LOOKBACK)
    spent = dict((client.stats.snapshot() - before).by_endpoint())
    if parts is not None:
        parts.update(split_poll(report, spent))
    return spent


def split_poll(report: Any, spent: dict[str, int]) -> Counter[str]:
    """One poll's requests by purpose. "floor" is the one request no poll can avoid: the
    edge read's first page, or the late re-read's first page when that read reached the end
    of the list and so was the edge read too. The rest is the edge's further pages (traffic),
    the late re-read (the lookback), the parked-link read and first-sight feeds. Designs
    whose report does not say (`--design`) come out as "unsplit"."""
    parts: Counter[str] = Counter(feeds=spent.get("/manga/{id}/feed", 0))
    if not hasattr(report, "late_requests"):
        parts["unsplit"] = spent.get("/chapter", 0)
        return parts
    edge, late, parked = report.edge_requests, report.late_requests, report.parked_requests
    parts["floor"] = 1 if edge or late or parked else 0
    if edge:
        edge -= 1
    elif late:
        late -= 1
    elif parked:
        parked -= 1
    parts.update(edge=edge, late=late, parked=parked)
    return parts


def new_chapter_labels(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        # The earlier design (`--design`) sent no label: its `chapter` was the label.
        return [p.get("label", p["chapter"]) for p in conn.execute(
            select(notification_outbox.c.payload)
            .where(notification_outbox.c.kind == "new-chapter")).scalars()]


# --- first sight ---------------------------------------------------------------------------

def first_sight(backend: str, tmp: Path, count: int, seed: int) -> list[list[str]]:
    rows = []
    # Right after the previous poll (its parked-link and late reads not due), and as the
    # quarter-hour poll that also runs them.
    for gap, name in ((timedelta(minutes=2), "poll 2 min after the last"),
                      (timedelta(minutes=15), "poll 15 min after the last")):
        with world(backend, tmp, count + 20, seed, count) as (sim, engine, client, ids):
            now = datetime.now(UTC).replace(microsecond=0)
            poll_at(engine, client, now - gap)
            with SimulatorAdmin(sim.url) as admin:
                admin.add_chapters([{"manga": m, "chapter": "5000", "group": "Bench Scans",
                                     "createdAt": iso(now - gap + timedelta(seconds=i % 100))}
                                    for i, m in enumerate(ids[:count])])
            spent = poll_at(engine, client, now)
            announced = len(new_chapter_labels(engine))
        feeds = spent.get("/manga/{id}/feed", 0)
        rows.append([f"{count}", name, str(sum(spent.values())),
                     f"{spent.get('/chapter', 0)} `/chapter` + {feeds} feed",
                     f"{announced}/{count}"])
    return rows


# --- poll frequency ------------------------------------------------------------------------

def frequency(backend: str, tmp: Path, per_hour: float, hours: float, seed: int
              ) -> list[list[str]]:
    rows = []
    results: dict[int, float] = {}
    for every in (15, 1):
        parts: Counter[str] = Counter()
        with world(backend, tmp, 400, seed, 20) as (sim, engine, client, ids):
            rng = random.Random(seed)
            ours, others = ids[:20], ids[20:]
            t0 = (datetime.now(UTC) - timedelta(hours=hours + 2)).replace(second=0,
                                                                          microsecond=0)
            traffic = []
            for i in range(round(per_hour * hours)):
                when = t0 + timedelta(seconds=rng.uniform(0, hours * 3600))
                target = ours[i % 20] if i % 30 == 0 else rng.choice(others)
                traffic.append({"manga": target, "chapter": str(6000 + i),
                                "group": "Bench Scans", "createdAt": iso(when)})
            late_at = 30 // every * every  # the first poll at or after minute 30
            with SimulatorAdmin(sim.url) as admin:
                if traffic:
                    admin.add_chapters(traffic)
                poll_at(engine, client, t0 - timedelta(minutes=1), admin)
                spent = 0
                polls = 0
                minute = every
                while minute <= hours * 60:
                    if minute == late_at:
                        # Stamped at minute 10, in MangaDex's list only from minute 30.
                        stamp = iso(t0 + timedelta(minutes=10))
                        admin.add_chapters([{"manga": ours[0], "chapter": "99999",
                                             "group": "Late Scans", "createdAt": stamp}])
                    spent += sum(poll_at(engine, client, t0 + timedelta(minutes=minute),
                                         admin, parts).values())
                    polls += 1
                    minute += every
            found = "99999" in new_chapter_labels(engine)
        results[every] = spent / hours
        assert sum(parts.values()) == spent, (parts, spent)

        split = [f"{parts[name] / hours:.1f}" if name in parts else "-"
                 for name in ("floor", "edge", "late", "parked", "feeds")]
        rows.append([f"{per_hour:g}", f"{every} min", str(polls), f"{spent / hours:.1f}",
                     *split, "yes" if found else "NO"])
    rows[-1].append(f"{results[1] / results[15]:.2f}x")
    rows[0].append("")
    return rows


FREQUENCY_COLUMNS = ["chapters/hour", "poll every", "polls", "requests/hour",
                     "of which one per poll (floor)", "edge pages beyond it",
                     "late re-read (lookback)", "parked-link read", "first-sight feeds",
                     "late chapter announced", "1 min / 15 min"]


# --- shuffled ties -------------------------------------------------------------------------

def ties(backend: str, tmp: Path, count: int, rounds: int, seed: int) -> list[list[str]]:
    """Per manga, in one second: chapter N from two groups and link chapter N.5 (readable at
    once, pages 0), N above every number it had. Expected: N and N.5 announced once each.
    The simulator lists chapters of one second in id order, so each round is a fresh
    shuffle (the earlier design missed N whenever N.5's id sorted first)."""
    ours_announced = seed_announced = expected = 0
    for r in range(rounds):
        with world(backend, tmp, count + 20, seed + r, count) as (sim, engine, client, ids):
            now = datetime.now(UTC).replace(microsecond=0)
            tie = now - timedelta(minutes=5)
            poll_at(engine, client, tie - timedelta(minutes=2))
            # The seed's poller reads total_chapters now, before this design's poll moves it.
            seeder = SeedPoller(engine, client, batch_size=len(ids))
            with engine.connect() as conn:
                totals = {r.mangadex_id: r.total_chapters for r in conn.execute(
                    select(manga.c.mangadex_id, manga.c.total_chapters))}
            specs = []
            for m in ids[:count]:
                numbers = [float(c.chapter) for c in sim.catalogue.manga[m].chapters
                           if c.chapter and c.chapter.replace(".", "", 1).isdigit()]
                top = int(max([*numbers, totals.get(m) or 0])) + 1
                for group in ("Alpha Scans", "Beta Scans"):
                    specs.append({"manga": m, "chapter": str(top), "group": group,
                                  "createdAt": iso(tie)})
                specs.append({"manga": m, "chapter": f"{top}.5", "group": "Official",
                              "createdAt": iso(tie), "pages": 0,
                              "externalUrl": f"https://publisher.example/{m}/{top}.5"})
            with SimulatorAdmin(sim.url) as admin:
                admin.add_chapters(specs)
            expected += 2 * count
            poll_at(engine, client, now)
            ours_announced += len(new_chapter_labels(engine))
            # The seed's per-manga poll over the same manga, once each.
            tie_ids = {c.id for m in ids[:count] for c in sim.catalogue.manga[m].chapters
                       if c.created_at >= int(tie.timestamp())}
            seed_announced += len(set(seeder.poll(now + timedelta(seconds=1)).notified)
                                  & tie_ids)
            with engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(manga)).scalar() == count
    ours = "this design" if SYNC is sync_chapter_window else "`--design`"
    return [[ours, f"{ours_announced}/{expected}"],
            ["seed per-manga", f"{seed_announced}/{expected}"]]


def run_rounds(backend: str, tmp: Path, seed: int) -> None:
    print("First sight: catalogued manga showing activity for the first time, one new "
          "chapter each, in one poll.\n")
    print(table(["manga", "poll", "requests", "of which", "announced"],
                first_sight(backend, tmp, 200, seed)))
    print("\nPoll frequency: the same traffic over 2 simulated hours (1 in 30 chapters on the "
          "20 catalogued manga, the rest on 380 others), polled every 15 minutes and every "
          "minute; one chapter appears in the list 20 minutes after its timestamp.\n")
    rows = []
    for per_hour in (60, 4000):
        rows += frequency(backend, tmp, per_hour, 2.0, seed)
    print(table(FREQUENCY_COLUMNS, rows))
    print("\nShuffled ties: per manga, N from two groups and link chapter N.5 readable in "
          "the same second (50 manga, 3 rounds with fresh ids).\n")
    print(table(["design", "announced / expected"], ties(backend, tmp, 50, 3, seed)))
