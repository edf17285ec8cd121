"""New-chapter detection: this design (`sync_chapter_window` every 15 min) side by side with
the seed's per-manga polling (`seed_polling.py`), same simulator, same chapter traffic, at
several catalogue sizes.

    .venv/bin/python bench/bench_chapters.py [--quick] [--sizes 200,2000,20000] [--hours 12]
        [--traffic 20] [--background 40] [--backend sqlite|postgresql]
    .venv/bin/python bench/bench_chapters.py --end-to-end [--chapters 5] [--interval 30]
    .venv/bin/python bench/bench_chapters.py --rounds [--backend sqlite|postgresql]
        [--design FILE]
        (first sight of 200 manga, 1-minute against 15-minute polls, shuffled ties:
        see chapter_rounds.py)

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
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
from _common import command, free_port, minutes, stop, table, throwaway_db
from chapter_rounds import run_rounds, use_design
from seed_polling import SeedPoller
from sqlalchemy import Engine, func, insert, select, update

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.tables import chapters, manga, notification_outbox
from mangasync_pipeline.mangadex.client import EP_CHAPTERS, EP_FEED, MangaDexClient
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.sync.catalogue import SILENT, import_ids
from mangasync_pipeline.sync.chapters import sync_chapter_window
from mangasync_pipeline.sync.notifier import Notifier

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
            # MangaDex's clock at the poll's instant: what is published later is not listed.
            sim.offset_seconds = (at - datetime.now(UTC)).total_seconds()
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
        sim.offset_seconds = 0.0
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


# --- end to end: simulator -> sync -> outbox -> server -> `mangasync listen` ----------------


class Listener:
    """`mangasync listen` in its own process; every line it prints, with when it came."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip()))

    def seen(self, *needles: str) -> float | None:
        for at, line in list(self.lines):
            if "NEW_CHAPTER" in line and all(n in line for n in needles):
                return at
        return None


def end_to_end(backend: str, count: int, interval: float, seed: int) -> None:
    """`count` chapters appear at random instants; polls (sync + deliver) every `interval`."""
    rng = random.Random(seed)
    started = time.perf_counter()
    history_end = datetime.now(UTC) - timedelta(days=1)
    with tempfile.TemporaryDirectory() as tmpdir, throwaway_db(backend, Path(tmpdir)) as db, \
            Simulator(seed=seed, manga_count=40, rate_limit=RATE, chapters_per_manga=10,
                      end=history_end) as sim:
        engine = make_engine(db)
        followed = [m.id for m in sim.catalogue.manga.values()
                    if m.content_rating != "pornographic"][:count]
        client = MangaDexClient(sim.url, rate_limit=RATE)
        import_ids(engine, client, followed, policy=SILENT)
        with engine.connect() as conn:
            titles = dict(conn.execute(select(manga.c.mangadex_id, manga.c.title)).all())
        http_port, udp_port = free_port(), free_port(kind=socket.SOCK_DGRAM)
        env = {**os.environ, "DATABASE_URL": db, "MANGASYNC_HTTP_PORT": str(http_port),
               "MANGASYNC_UDP_PORT": str(udp_port), "PYTHONUNBUFFERED": "1"}
        cli = [sys.executable, "-m", "mangasync_pipeline.cli"]
        token = subprocess.run([*cli, "users", "add", "bench"], env=env, capture_output=True,
                               text=True, check=True).stdout.strip()
        for mid in followed:
            subprocess.run([*cli, "library", "add", "bench", mid], env=env, check=True,
                           capture_output=True)
        server = subprocess.Popen([*cli, "server"], env=env, stderr=subprocess.DEVNULL)
        listener: Listener | None = None
        base = f"http://127.0.0.1:{http_port}"
        try:
            wait_until(lambda: _health(base) is not None, 30, "the server did not start")
            listener = Listener([*cli, "listen", "--user", "bench",
                                 "--udp-port", str(udp_port)],
                                {**env, "MANGASYNC_READER_TOKEN": token})
            wait_until(lambda: (_health(base) or {}).get("udp", {}).get("sessions", 0) > 0, 15,
                       "listen did not register")
            latencies = _run_polls(sim, engine, client, listener, base, followed, titles,
                                   count, interval, rng)
        finally:
            if listener is not None:
                stop(listener.proc)
            stop(server)
            client.close()
            engine.dispose()
    print(f"`{command()}`\n")
    print(f"{count} chapters appeared in the simulator at random instants, one on each of "
          f"{count} manga a `mangasync listen` client follows; every {interval:g} s this "
          f"process ran `sync_chapter_window` then `Notifier.deliver` (the design at a "
          f"{interval:g} s interval: Dagster's cron cannot go below one minute); limit "
          f"{RATE:g} req/s; MangaHub on {backend}.\n")
    print(table(["chapters", "latency median", "max", "min", "poll interval"],
                [[str(len(latencies)), f"{statistics.median(latencies):.1f} s",
                  f"{max(latencies):.1f} s", f"{min(latencies):.1f} s", f"{interval:g} s"]]))
    print(f"\nTotal run time {time.perf_counter() - started:.0f} s.")


def _health(base: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{base}/health", timeout=2)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def wait_until(ready: Callable[[], bool], seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(failure)
        time.sleep(0.1)


def _run_polls(sim: Simulator, engine: Engine, client: MangaDexClient, listener: Listener,
               base: str, followed: list[str], titles: dict[str, str], count: int,
               interval: float, rng: random.Random) -> list[float]:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = time.time() + interval  # chapters come after one poll has run
    # One chapter somewhere in each of `count` successive intervals.
    plan = [(first + (i + rng.random()) * interval, followed[i]) for i in range(count)]
    appeared: dict[str, tuple[float, str]] = {}

    def publish() -> None:
        with SimulatorAdmin(sim.url) as admin:
            for at, mid in plan:
                time.sleep(max(0.0, at - time.time()))
                number = str(top_number(sim, mid) + 1)
                admin.add_chapters([{"manga": mid, "chapter": number, "language": "en",
                                     "group": "Bench Scans"}])
                appeared[mid] = (time.time(), number)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    deadline = plan[-1][0] + 4 * interval
    with Notifier(base) as notifier:
        while time.time() < deadline:
            tick = time.time()
            sync_chapter_window(engine, client, ("en",), day, day + timedelta(days=2),
                                lookback=LOOKBACK)
            notifier.deliver(engine)
            if len(appeared) == count and all(
                    listener.seen(titles[m], f"ch. {n}") for m, (_, n) in appeared.items()):
                break
            time.sleep(max(0.0, interval - (time.time() - tick)))
    publisher.join(timeout=1)
    latencies = []
    for mid, (at, number) in appeared.items():
        printed = listener.seen(titles[mid], f"ch. {number}")
        if printed is None:
            raise SystemExit(f"chapter {number} of manga {mid} never reached the listener")
        latencies.append(printed - at)
    return latencies


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
    parser.add_argument("--end-to-end", action="store_true",
                        help="instead: latency from a chapter in the simulator to its datagram "
                             "printed by `mangasync listen`, polling every --interval s")
    parser.add_argument("--rounds", action="store_true",
                        help="instead: first sight, poll frequency and shuffled ties")
    parser.add_argument("--design", type=Path, default=None,
                        help="with --rounds: another version's sync/chapters.py to measure")
    parser.add_argument("--chapters", type=int, default=5, help="with --end-to-end")
    parser.add_argument("--interval", type=float, default=30.0, help="with --end-to-end")
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(args.backend, args.chapters, args.interval, args.seed)
        return
    if args.rounds:
        if args.design is not None:
            use_design(args.design)
        started = time.perf_counter()
        print(f"`{command()}`\n")
        with tempfile.TemporaryDirectory() as tmpdir:
            run_rounds(args.backend, Path(tmpdir), args.seed)
        print(f"\nTotal run time {time.perf_counter() - started:.0f} s.")
        return
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
