"""New-chapter detection: this design (`sync_chapter_window` every 15 min) side by side with
the seed's per-manga polling (`seed_polling.py`), same simulator, same chapter traffic, at
several catalogue sizes.

    .venv/bin/python bench/bench_chapters.py [--quick] [--sizes 200,2000,20000] [--hours 12]
        [--traffic 20] [--background 40] [--backend sqlite|postgresql]

Method (printed with the results): simulated time is replayed, not waited for. The chapter
traffic gets explicit `createdAt`/`publishAt` instants on a past timeline, after every
generated chapter, and each poll runs as at its scheduled instant T: this design's window
ends at T (`sync_chapter_window(..., end=T)`, cursors and lookback as in production), and the
seed ignores what became readable at or after T. Every request is real HTTP to the simulator.
A chapter's detection latency is T of the first poll that stores it (ours) or sees it (seed)
minus the instant it became readable. The seed's round-robin can take longer than the run to
reach a manga; those chapters get the instant of the poll its schedule would check them at,
and the chapters it did reach within the run check that schedule (the `matched` figure).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from _common import command, minutes, table, throwaway_db
from seed_polling import SeedPoller
from sqlalchemy import Engine, func, insert, select, update

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.tables import chapters, manga, notification_outbox
from mangasync_pipeline.mangadex.client import EP_CHAPTERS, EP_FEED, MangaDexClient
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.sync.catalogue import SILENT, import_ids
from mangasync_pipeline.sync.chapters import sync_chapter_window

INTERVAL = timedelta(minutes=15)  # CHAPTER_POLL_INTERVAL
LOOKBACK = timedelta(hours=1)
BATCH = 50  # CHAPTER_BATCH_SIZE
REAL_MAX = 2_000  # catalogued manga that exist in the simulator; beyond, padding rows
POOL = 400  # simulator manga never catalogued: the rest of MangaDex's traffic
RATE = 5.0


@dataclass
class Traffic:
    ids: list[str] = field(default_factory=list)
    manga: dict[str, str] = field(default_factory=dict)  # chapter id -> manga id
    readable: dict[str, datetime] = field(default_factory=dict)


@dataclass
class Run:
    size: int
    hours: float
    ours_requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ours_per_poll: list[int] = field(default_factory=list)
    ours_seconds: list[float] = field(default_factory=list)
    ours_latency: list[float] = field(default_factory=list)
    ours_notifications: int = 0
    seed_requests: int = 0
    seed_seconds: list[float] = field(default_factory=list)
    seed_latency: list[float] = field(default_factory=list)
    seed_in_run: int = 0
    seed_matched: int = 0
    seed_traffic_notified: int = 0
    seed_history: int = 0
    seed_checked: int = 0
    empty_last_chapter: int = 0
    traffic: int = 0
    scheduled: int = 0


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def top_number(sim: Simulator, manga_id: str) -> Decimal:
    best = Decimal(0)
    for c in sim.catalogue.manga[manga_id].chapters:
        if c.language != "en" or c.chapter is None:
            continue
        try:
            best = max(best, Decimal(c.chapter))
        except InvalidOperation:
            continue
    return best


def add_traffic(sim: Simulator, rng: random.Random, start: datetime, hours: float,
                per_hour: float, targets: list[str], next_number: dict[str, Decimal]
                ) -> Traffic:
    """`per_hour` English chapters at uniform random instants over random `targets`."""
    count = round(per_hour * hours)
    specs = []
    # Numbers go up with time on each manga, as releases do.
    for when in sorted(start + timedelta(seconds=rng.uniform(0, hours * 3600))
                       for _ in range(count)):
        target = rng.choice(targets)
        if target not in next_number:
            next_number[target] = top_number(sim, target)
        next_number[target] += 1
        specs.append((when, target, next_number[target]))
    traffic = Traffic()
    if not specs:
        return traffic
    with SimulatorAdmin(sim.url) as admin:
        ids = admin.add_chapters([
            {"manga": m, "chapter": str(n), "language": "en", "group": "Bench Scans",
             "createdAt": iso(when), "publishAt": iso(when)} for when, m, n in specs])
    for cid, (when, m, _) in zip(ids, specs, strict=True):
        traffic.ids.append(cid)
        traffic.manga[cid] = m
        traffic.readable[cid] = when.replace(microsecond=0)
    return traffic


def add_scheduled(sim: Simulator, traffic: Traffic, catalogued: set[str], start: datetime,
                  end: datetime) -> None:
    """Generated chapters scheduled long ago that come out during the timeline are new
    chapters too: track them with the traffic."""
    first, last = int(start.timestamp()), int(end.timestamp())
    with sim.catalogue.lock:
        found = [c for c in sim.catalogue.chapters.values()
                 if c.manga.id in catalogued and c.language == "en"
                 and first <= c.readable_at < last and c.id not in traffic.manga]
    for c in sorted(found, key=lambda c: (c.readable_at, c.id)):
        traffic.ids.append(c.id)
        traffic.manga[c.id] = c.manga.id
        traffic.readable[c.id] = datetime.fromtimestamp(c.readable_at, UTC)


def build_catalogue(engine: Engine, client: MangaDexClient, real: list[str], size: int,
                    catalogued_at: datetime) -> None:
    """`real` simulator manga through the real import, padded to `size` with rows of manga
    that have no MangaDex traffic, interleaved so real ones are spread over the round-robin."""
    chunks = [real[i:i + 100] for i in range(0, len(real), 100)]
    padding = size - len(real)
    serial = 0
    for n, chunk in enumerate(chunks):
        import_ids(engine, client, chunk, policy=SILENT)
        share = padding * (n + 1) // len(chunks) - padding * n // len(chunks)
        rows = []
        for _ in range(share):
            serial += 1
            rows.append({"mangadex_id": f"00000000-0000-4000-8000-{serial:012d}",
                         "slug": f"padding-{serial}", "title": f"Padding {serial}",
                         "created_at": catalogued_at, "catalogued_at": catalogued_at,
                         "updated_at": catalogued_at})
        with engine.begin() as conn:
            for i in range(0, len(rows), 5000):
                conn.execute(insert(manga), rows[i:i + 5000])
    # Everything in the catalogue entered it just before the timeline starts.
    with engine.begin() as conn:
        conn.execute(update(manga).values(catalogued_at=catalogued_at))


def stored_among(engine: Engine, ids: list[str]) -> set[str]:
    found: set[str] = set()
    with engine.connect() as conn:
        for i in range(0, len(ids), 500):
            found.update(conn.execute(select(chapters.c.mangadex_chapter_id).where(
                chapters.c.mangadex_chapter_id.in_(ids[i:i + 500]))).scalars())
    return found


def run_size(sim: Simulator, db: str, size: int, start: datetime, hours: float,
             real_ids: list[str], pool_ids: list[str], per_hour: float, background: float,
             seed: int) -> Run:
    run = Run(size, hours)
    engine = make_engine(db)
    rng = random.Random(seed)
    real = real_ids[:min(size, REAL_MAX)]
    with MangaDexClient(sim.url, rate_limit=None) as ours, \
            MangaDexClient(sim.url, rate_limit=None) as seed_client:
        build_catalogue(engine, ours, real, size, start - timedelta(hours=1))
        with engine.connect() as conn:
            run.empty_last_chapter = int(conn.execute(
                select(func.count()).select_from(manga).where(
                    manga.c.total_chapters.is_(None), manga.c.mangadex_id.in_(real))).scalar()
                or 0)
        numbers: dict[str, Decimal] = {}
        traffic = add_traffic(sim, rng, start, hours, per_hour, real, numbers)
        add_traffic(sim, rng, start, hours, background, pool_ids, numbers)
        scheduled_before = len(traffic.ids)
        add_scheduled(sim, traffic, set(real), start, start + timedelta(hours=hours))
        run.scheduled = len(traffic.ids) - scheduled_before
        run.traffic = len(traffic.ids)
        seeder = SeedPoller(engine, seed_client, batch_size=BATCH)

        polls = int(hours * 3600 // INTERVAL.total_seconds()) + 1
        times = [start + INTERVAL * (k + 1) for k in range(polls)]
        ours_pending = list(traffic.ids)
        seed_seen: dict[str, int] = {}
        checked: set[str] = set()
        for k, at in enumerate(times):
            before = ours.stats.snapshot()
            clock = time.perf_counter()
            sync_chapter_window(engine, ours, ("en",), start - INTERVAL - LOOKBACK, at,
                                lookback=LOOKBACK)
            run.ours_seconds.append(time.perf_counter() - clock)
            spent = (ours.stats.snapshot() - before).by_endpoint()
            for endpoint, n in spent.items():
                run.ours_requests[endpoint] += n
            run.ours_per_poll.append(sum(spent.values()))
            found = stored_among(engine, ours_pending)
            for cid in found:
                run.ours_latency.append((at - traffic.readable[cid]).total_seconds())
            ours_pending = [c for c in ours_pending if c not in found]

            clock = time.perf_counter()
            checked.update(seeder.catalogue[i].mangadex_id for i in seeder.batch(k))
            poll = seeder.poll(at)
            run.seed_seconds.append(time.perf_counter() - clock)
            run.seed_requests += poll.requests
            run.seed_history += poll.history_notified
            notified = set(poll.notified)
            for cid in poll.first_seen:
                if cid in traffic.readable:
                    seed_seen[cid] = k
                    run.seed_traffic_notified += cid in notified
        run.seed_checked = len(checked & set(real))
        if ours_pending:
            raise SystemExit(f"this design missed {len(ours_pending)} chapters, e.g. "
                             f"{ours_pending[0]}: the benchmark's method is wrong")
        with engine.connect() as conn:
            run.ours_notifications = int(conn.execute(
                select(func.count()).select_from(notification_outbox).where(
                    notification_outbox.c.kind == "new-chapter")).scalar() or 0)

        cycle = math.ceil(size / BATCH)
        schedule = [start + INTERVAL * (k + 1) for k in range(polls + cycle + 1)]
        for cid in traffic.ids:
            predicted = seeder.first_check_after(traffic.manga[cid], schedule,
                                                 traffic.readable[cid])
            assert predicted is not None
            if cid in seed_seen:
                run.seed_in_run += 1
                run.seed_matched += seed_seen[cid] == predicted
            run.seed_latency.append((schedule[predicted] - traffic.readable[cid])
                                    .total_seconds())
    engine.dispose()
    return run


def latency(values: list[float]) -> tuple[str, str, str]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return minutes(statistics.median(ordered)), minutes(p95), minutes(ordered[-1])


def report(runs: list[Run], args: argparse.Namespace, backend: str, elapsed: float) -> None:
    print(f"`{command()}`\n")
    print(f"Traffic: {args.traffic:g} new English chapters/hour on random catalogued manga "
          f"plus {args.background:g}/hour on manga outside the catalogue, over {args.hours:g} "
          f"simulated hours; polls every {minutes(INTERVAL.total_seconds())} "
          f"(lookback {minutes(LOOKBACK.total_seconds())}), seed batch {BATCH}; "
          f"MangaHub on {backend}. Time is replayed, not waited for (method in the script's "
          f"docstring): latencies are simulated time.\n")
    rows = []
    for r in runs:
        # Per hour of polling: the run's polls, one every interval (one more than the traffic
        # hours hold, so the last chapters are seen).
        hours = len(r.ours_per_poll) * INTERVAL.total_seconds() / 3600
        per_hour = {k: v / hours for k, v in r.ours_requests.items()}
        total_h = sum(per_hour.values())
        med, p95, top = latency(r.ours_latency)
        rows.append([f"{r.size:,}", "this design", f"{total_h:.1f}",
                     f"{per_hour.get(EP_CHAPTERS, 0):.1f} `/chapter` + "
                     f"{per_hour.get(EP_FEED, 0):.1f} baseline feeds",
                     f"{statistics.median(r.ours_per_poll):g} (max {max(r.ours_per_poll)})",
                     med, p95, top, f"{r.traffic}/{r.traffic}",
                     f"{r.ours_notifications} (0 history)",
                     f"{statistics.median(r.ours_seconds):.2f} s"])
        med, p95, top = latency(r.seed_latency)
        rows.append([f"{r.size:,}", "seed per-manga", f"{r.seed_requests / hours:.1f}",
                     f"{r.seed_requests / hours:.1f} feeds", str(BATCH), med, p95, top,
                     f"{r.seed_in_run}/{r.traffic} (schedule matched {r.seed_matched})",
                     f"{r.seed_traffic_notified} + {r.seed_history} history "
                     f"({r.seed_checked} manga checked)",
                     f"{statistics.median(r.seed_seconds):.2f} s"])
    print("New chapters on catalogued manga per run (added by the benchmark + scheduled by the "
          "simulator's generated history to come out during the run): "
          + ", ".join(f"{r.size:,}: {r.traffic - r.scheduled} + {r.scheduled}" for r in runs)
          + ".\n")
    print(table(["catalogued", "design", "requests/hour", "of which", "requests/poll",
                 "latency median", "p95", "max", "detected within the run",
                 "NEW_CHAPTER notifications", "real time per poll"], rows))
    print("\nThe seed with its latency brought down to one poll interval would read every "
          "manga's feed each poll:\n")
    budget = RATE * 3600
    print(table(["catalogued", "requests/hour", f"share of {RATE:g} req/s ({budget:,.0f}/h)"],
                [[f"{r.size:,}", f"{4 * r.size:,}", f"{4 * r.size / budget:.0%}"]
                 for r in runs]))
    flood = [r for r in runs if r.seed_checked]
    if flood:
        r = max(flood, key=lambda r: r.seed_checked)
        real = min(r.size, REAL_MAX)
        print(f"\nHistory flood of the seed's rule: on their first check, {r.seed_checked} "
              f"catalogued manga ({r.empty_last_chapter} of the {real} real ones have an "
              f"empty `lastChapter`) gave {r.seed_history} notifications for chapters "
              f"published before the manga entered the catalogue, "
              f"{r.seed_history / r.seed_checked:.1f} per manga; this design gave none.")
    print(f"\nTotal run time {elapsed:.0f} s.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 200,2000 over 3 hours")
    parser.add_argument("--sizes", default="200,2000,20000")
    parser.add_argument("--hours", type=float, default=12.0)
    parser.add_argument("--traffic", type=float, default=20.0,
                        help="new chapters/hour on catalogued manga")
    parser.add_argument("--background", type=float, default=40.0,
                        help="new chapters/hour on manga outside the catalogue")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.hours = "200,2000", 3.0
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        raise SystemExit(f"--sizes: not a comma-separated list of numbers: {args.sizes}") from None
    if not sizes or min(sizes) < BATCH:
        raise SystemExit(f"--sizes: each size must be at least the batch of {BATCH}")

    started = time.perf_counter()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # Generated history ends well before the first timeline; each size gets its own day.
    history_end = now - timedelta(days=len(sizes) + 30)
    rng = random.Random(args.seed)
    real_count = min(max(sizes), REAL_MAX)
    runs = []
    with Simulator(seed=args.seed, manga_count=(real_count + POOL) * 21 // 20, rate_limit=None,
                   chapters_per_manga=20, end=history_end) as sim, \
            tempfile.TemporaryDirectory() as tmpdir:
        # Backfills and new-manga detection catalogue what MangaDex's default content ratings
        # show, and `/chapter` reads with the same default: pornographic manga stay out.
        everyone = sorted(m.id for m in sim.catalogue.manga.values()
                          if m.content_rating != "pornographic")
        rng.shuffle(everyone)
        real_ids, pool_ids = everyone[:real_count], everyone[real_count:]
        for i, size in enumerate(sizes):
            start = history_end + timedelta(days=2 + i)
            with throwaway_db(args.backend, Path(tmpdir)) as db:
                runs.append(run_size(sim, db, size, start, args.hours, real_ids, pool_ids,
                                     args.traffic, args.background, args.seed))
    report(runs, args, args.backend, time.perf_counter() - started)


if __name__ == "__main__":
    main()
