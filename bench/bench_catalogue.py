"""Benchmark of the catalogue sync against the simulator (run in its own process).

1. initial sync of 200 at the real limit of 5 requests/s: requests and wall time;
2. backfill of ~10,000 manga created over 4 days (`import_created_range`, what a backfill of
   those day partitions runs): requests against the floor ceil(N/100), wall time against the
   rate-limit floor requests / 5 s; at 5/s, then with the limit lifted to show our own cost;
3. scaling at 1,000 / 10,000 / 50,000 manga with the limit lifted: requests and the time to
   fetch and parse the pages, then `upsert_manga` throughput (pages of 100 rows, pre-parsed,
   one transaction a page, so only the database side is timed) on SQLite and PostgreSQL,
   first into an empty table and again with every row unchanged (a re-materialization).

    .venv/bin/python bench/bench_catalogue.py [--quick | --full] [--backends sqlite,postgresql]

The default run takes about 5 minutes; `--quick` about 3; `--full` about 12.

4. `--mirror N`: only the whole-catalogue mirror. A simulator of N manga spread over its
   3,200-odd days since 2018-01-15 (no chapters), mirrored from scratch by
   `mangasync backfill --what catalogue` over the whole range and by one Dagster single-run
   backfill of `catalogue_job` over the same partitions (in its own process, as a run worker
   runs it), each into a fresh database per backend, rate limit lifted. Reports requests
   counted by the simulator against the floor ceil(N/100), the time those requests take at
   5/s, the wall time, and each process's peak RSS.

The N manga of a backfill are those MangaDex's default content ratings show (the simulator
hides pornographic ones as MangaDex does), so N is a little under the number added.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from _common import BACKENDS, command, minutes, simulator_process, table, throwaway_db
from sqlalchemy import text

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.mangadex.client import DEFAULT_INCLUDES, MangaDexClient
from mangasync_pipeline.mangadex.mapping import MangaRow, manga_row
from mangasync_pipeline.mangadex.simulator import SimulatorAdmin
from mangasync_pipeline.sync.catalogue import SILENT, import_created_range, initial_sync
from mangasync_pipeline.sync.catalogue_store import upsert_manga

RATE = 5.0
BACKFILL_DAYS = [date(2024, 3, 1) + timedelta(days=d) for d in range(4)]
SCALES = {  # size -> (first day, days); each size lives on its own days of the simulator
    1_000: (date(2023, 1, 1), 1),
    10_000: (date(2023, 2, 1), 4),
    50_000: (date(2023, 3, 1), 10),
}


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def add_on_days(admin: SimulatorAdmin, total: int, first: date, days: int) -> None:
    per_day = math.ceil(total / days)
    for d in range(days):
        admin.add_manga(count=min(per_day, total - d * per_day),
                        day=(first + timedelta(days=d)).isoformat())


def sim_total(admin: SimulatorAdmin) -> tuple[int, int]:
    stats = admin.stats()
    return int(stats["total"]), int(stats["rate_limited"])


def initial_sync_rows(backends: list[str], tmp: Path) -> list[list[str]]:
    rows = []
    with simulator_process(rate_limit=RATE, manga=1000) as url, SimulatorAdmin(url) as admin:
        for backend in backends:
            with throwaway_db(backend, tmp) as db:
                engine = make_engine(db)
                admin.reset_stats()
                with MangaDexClient(url, rate_limit=RATE) as client:
                    started = time.perf_counter()
                    report = initial_sync(engine, client, 200)
                    wall = time.perf_counter() - started
                engine.dispose()
                total, limited = sim_total(admin)
                rows.append([f"initial sync of 200, {backend}, limit 5/s",
                             str(report.catalogue.inserted), f"{total} (floor 2)",
                             f"{wall:.2f} s", f"{total / RATE:.1f} s", str(limited)])
    return rows


def backfill_rows(backends: list[str], tmp: Path, rates: list[float | None]
                  ) -> list[list[str]]:
    rows = []
    start, end = day_start(BACKFILL_DAYS[0]), day_start(BACKFILL_DAYS[-1]) + timedelta(days=1)
    for rate in rates:
        with simulator_process(rate_limit=rate, manga=10) as url, SimulatorAdmin(url) as admin:
            add_on_days(admin, 10_000, BACKFILL_DAYS[0], len(BACKFILL_DAYS))
            for backend in backends:
                with throwaway_db(backend, tmp) as db:
                    engine = make_engine(db)
                    admin.reset_stats()
                    with MangaDexClient(url, rate_limit=rate) as client:
                        started = time.perf_counter()
                        report = import_created_range(engine, client, start, end, policy=SILENT)
                        wall = time.perf_counter() - started
                        waited = client.stats.snapshot().rate_limit_wait_s
                    engine.dispose()
                total, limited = sim_total(admin)
                n = report.seen
                label = "limit 5/s" if rate else "limit lifted"
                rows.append([f"backfill of 4 days, {backend}, {label}", str(n),
                             f"{total} (floor {math.ceil(n / 100)})", f"{wall:.1f} s",
                             f"{total / RATE:.1f} s" + ("" if rate else " (at 5/s)"),
                             f"{limited}; waited on limiter {waited:.1f} s"])
    return rows


def fetch_rows(client: MangaDexClient, first: date, days: int) -> tuple[list[list[MangaRow]],
                                                                         int, float]:
    before = client.stats.snapshot()
    started = time.perf_counter()
    pages = [[manga_row(m, client.uploads_url) for m in page.items]
             for page in client.iter_manga_pages(
                 "createdAt", day_start(first), day_start(first) + timedelta(days=days),
                 includes=DEFAULT_INCLUDES)]
    elapsed = time.perf_counter() - started
    return [p for p in pages if p], (client.stats.snapshot() - before).total_requests, elapsed


def upsert_seconds(db: str, pages: list[list[MangaRow]], passes: int) -> list[float]:
    """Seconds to upsert every page into an empty table, then again with nothing changed."""
    engine = make_engine(db)
    timings = []
    for _ in range(passes):
        started = time.perf_counter()
        for page in pages:
            with engine.begin() as conn:
                upsert_manga(conn, page, utcnow(), SILENT)
        timings.append(time.perf_counter() - started)
    engine.dispose()
    return timings


def scaling_rows(backends: list[str], tmp: Path, sizes: list[int], full: bool
                 ) -> list[list[str]]:
    rows = []
    with simulator_process(rate_limit=None, manga=10) as url, SimulatorAdmin(url) as admin:
        for size in sizes:
            add_on_days(admin, size, *SCALES[size])
        with MangaDexClient(url, rate_limit=None) as client:
            for size in sizes:
                pages, requests, fetch_s = fetch_rows(client, *SCALES[size])
                n = sum(len(p) for p in pages)
                row = [f"{size:,}", str(n), f"{requests} (floor {math.ceil(n / 100)})",
                       f"{fetch_s:.1f} s ({n / fetch_s:.0f}/s)"]
                for backend in BACKENDS:
                    # PostgreSQL at 50,000 alone takes minutes: only with --full.
                    if backend not in backends or (size > 10_000 and backend != "sqlite"
                                                   and not full):
                        row += ["(--full)" if backend in backends else "-"] * 2
                        continue
                    with throwaway_db(backend, tmp) as db:
                        timings = upsert_seconds(db, pages, 2 if size <= 10_000 or full else 1)
                    row += [f"{n / t:.0f}/s ({t:.1f} s)" for t in timings]
                    row += ["(--full)"] * (2 - len(timings))
                rows.append(row)
    return rows


# --- the whole-catalogue mirror --------------------------------------------------------------

MIRROR_FROM = date(2018, 1, 15)  # the simulator's first day


def peak_rss_run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a child to completion: (wall seconds, peak RSS in MB, stderr tail)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}... failed: {err.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024, err.strip().splitlines()[-1] if err.strip() else ""


def dagster_mirror(first: str, last: str) -> None:
    """A backfill of catalogue_job over [first, last] as its backfill policy splits it (runs
    of at most CATALOGUE_RUN_PARTITIONS days), each run in its own process as Dagster's run
    worker runs it (`execute_run_iterator` on a real instance, events to its storage)."""
    from mangasync_pipeline.defs.assets import CATALOGUE_RUN_PARTITIONS

    start, end = date.fromisoformat(first), date.fromisoformat(last)
    if (end - start).days + 1 > CATALOGUE_RUN_PARTITIONS:
        while start <= end:
            stop = min(end, start + timedelta(days=CATALOGUE_RUN_PARTITIONS - 1))
            subprocess.run([sys.executable, os.path.abspath(__file__), "--dagster-mirror",
                            start.isoformat(), stop.isoformat()], check=True)
            start = stop + timedelta(days=1)
        return
    from dagster import DagsterInstance
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run_iterator

    repo = ReconstructableRepository.for_module("mangasync_pipeline.definitions", "defs",
                                                working_directory=os.getcwd())
    job = repo.get_reconstructable_job("catalogue_job")
    instance = DagsterInstance.local_temp(tempfile.mkdtemp(prefix="dagster-home-"))
    run = instance.create_run_for_job(
        job_def=job.get_definition(), job_code_origin=job.get_python_origin(),
        tags={"dagster/asset_partition_range_start": first,
              "dagster/asset_partition_range_end": last})
    for _ in execute_run_iterator(job, run, instance):
        pass
    if instance.get_run_by_id(run.run_id).status.value != "SUCCESS":  # type: ignore[union-attr]
        raise SystemExit("catalogue_job failed")


def mirror_rows(backends: list[str], tmp: Path, size: int,
                ways_on: dict[str, list[str]], last: date | None = None) -> list[list[str]]:
    last = last or (utcnow() - timedelta(days=1)).date()
    days = (last - MIRROR_FROM).days + 1
    rows = []
    with simulator_process(rate_limit=None, manga=size) as url, SimulatorAdmin(url) as admin:
        visible = int(admin._client.get("/manga", params={"limit": 0}).json()["total"])
        floor = math.ceil(visible / 100)
        env = {"MANGADEX_API_URL": url, "MANGADEX_RATE_LIMIT": "100000",
               "UDP_SERVER_URL": "http://127.0.0.1:9"}
        ways = {
            "`mangasync backfill --what catalogue`": [
                sys.executable, "-m", "mangasync_pipeline.cli", "backfill", "--from",
                MIRROR_FROM.isoformat(), "--to", last.isoformat(), "--what", "catalogue"],
            "Dagster backfill of `catalogue_job` (runs of at most 1,000 days)": [
                sys.executable, os.path.abspath(__file__), "--dagster-mirror",
                MIRROR_FROM.isoformat(), last.isoformat()],
        }
        for backend in backends:
            for way, args in ways.items():
                if backend not in ways_on.get(way.split()[0].strip("`"), backends):
                    continue
                with throwaway_db(backend, tmp) as db:
                    admin.reset_stats()
                    wall, rss, _ = peak_rss_run(args, {**env, "DATABASE_URL": db})
                    requests = int(admin.stats()["total"])
                    engine = make_engine(db)
                    with engine.connect() as conn:
                        stored = int(conn.execute(text("SELECT count(*) FROM manga")).scalar()
                                     or 0)
                    engine.dispose()
                rows.append([way, backend, f"{size:,} over {days:,} days", f"{stored:,}",
                             f"{requests:,} ({requests / floor:.2f}x)",
                             minutes(requests / RATE), f"{wall:.0f} s", f"{rss:.0f} MB"])
                print("| " + " | ".join(rows[-1]) + " |", file=sys.stderr, flush=True)
        rows.append(["floor ceil(N/100)", "", "", f"{visible:,} visible", f"{floor:,}",
                     minutes(floor / RATE), "", ""])
    return rows


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--dagster-mirror":
        dagster_mirror(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="SQLite only for the 5/s runs, scaling up to 10,000")
    parser.add_argument("--full", action="store_true",
                        help="also PostgreSQL and the unchanged pass at 50,000 (~12 min)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--mirror", type=int, metavar="N",
                        help="only the whole-catalogue mirror of N manga (90000 ~ MangaDex)")
    parser.add_argument("--mirror-last", metavar="DAY",
                        help="with --mirror: last day mirrored (default yesterday), to see how "
                             "a run's memory grows with its partitions")
    parser.add_argument("--dagster-backends", default=",".join(BACKENDS),
                        help="with --mirror: the databases of the Dagster runs (each takes "
                             "minutes of Dagster bookkeeping for its 3,242 partitions)")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise SystemExit(f"--backends: unknown {', '.join(sorted(unknown))} "
                         f"(choose from {', '.join(BACKENDS)})")
    if args.mirror:
        with tempfile.TemporaryDirectory() as tmpdir:
            rows = mirror_rows(backends, Path(tmpdir), args.mirror, {
                "Dagster": [b for b in args.dagster_backends.split(",") if b]},
                date.fromisoformat(args.mirror_last) if args.mirror_last else None)
        print(f"`{command()}`\n")
        print(table(["way", "database", "manga added", "stored", "requests (x floor)",
                     "at 5 req/s", "wall, limit lifted", "peak RSS"], rows))
        return
    limited = backends[:1] if args.quick else backends
    sizes = [1_000, 10_000] if args.quick else list(SCALES)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        runs = initial_sync_rows(limited, tmp)
        runs += backfill_rows(limited, tmp, [RATE])
        runs += backfill_rows(backends, tmp, [None])
        scale = scaling_rows(backends, tmp, sizes, args.full)
    print(f"`{command()}`\n")
    print(table(["run", "manga", "requests", "wall time", "rate-limit floor (requests / 5 s)",
                 "429s"], runs))
    print()
    print("Scaling, limit lifted (fetch = HTTP + JSON parse + mapping, simulator in its own "
          "process; upsert = `upsert_manga`, pages of 100, one transaction each):\n")
    print(table(["added", "manga N", "requests", "fetch", "SQLite upsert, empty table",
                 "SQLite re-upsert, unchanged", "PostgreSQL upsert, empty table",
                 "PostgreSQL re-upsert, unchanged"], scale))
    print(f"\nTotal run time {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
