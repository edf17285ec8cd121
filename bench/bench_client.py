"""Benchmark the MangaDex client against the simulator (all on loopback).

(a) the limit lifted: requests/second through the whole client, and parse time per 100 manga;
(b) the limit at its default 5/s for `--duration` seconds: achieved rate as a share of the
    limit, and the 429s the simulator answered (goal: >= 95 %, zero 429s), for one process
    and for `--processes` processes sharing a SQLite state file.

    .venv/bin/python bench/bench_client.py [--duration 20] [--processes 3]

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from mangasync_pipeline.db.migrate import upgrade
from mangasync_pipeline.mangadex.client import ALL_CONTENT_RATINGS, MangaDexClient
from mangasync_pipeline.mangadex.models import parse_collection, parse_manga
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin

RATE = 5.0


def throughput(manga: int) -> list[tuple[str, str]]:
    with Simulator(seed=11, manga_count=manga, rate_limit=None) as sim:
        with MangaDexClient(sim.url, rate_limit=None) as client:
            started = time.perf_counter()
            count = 0
            for page in client.iter_manga_pages(
                "createdAt", datetime(2000, 1, 1, tzinfo=UTC), content_ratings=ALL_CONTENT_RATINGS
            ):
                count += len(page.items)
            elapsed = time.perf_counter() - started
            requests = client.stats.snapshot().total_requests
            small = time.perf_counter()
            pings = 300
            for _ in range(pings):
                client.ping()
            ping_rate = pings / (time.perf_counter() - small)
        payload = httpx.get(
            f"{sim.url}/manga",
            params=[
                ("limit", "100"),
                ("includes[]", "author"),
                ("includes[]", "artist"),
                ("includes[]", "cover_art"),
            ],
        ).json()
    runs = []
    for _ in range(30):
        t = time.perf_counter()
        page = parse_collection(payload, "/manga", parse_manga)
        runs.append(time.perf_counter() - t)
    assert len(page.items) == 100
    return [
        (
            "limit lifted: `/manga` pages of 100 (keyset)",
            f"{requests / elapsed:.1f} req/s ({count} manga in {elapsed:.2f} s)",
        ),
        ("limit lifted: `/ping`", f"{ping_rate:.0f} req/s"),
        ("parse 100 manga (median of 30)", f"{statistics.median(runs) * 1000:.1f} ms"),
    ]


def _hammer(url: str, state_url: str | None, duration: float, out: multiprocessing.Queue) -> None:
    with MangaDexClient(url, rate_limit=RATE, state_url=state_url) as client:
        deadline = time.monotonic() + duration
        sent: list[float] = []
        while time.monotonic() < deadline:
            client.newest_manga(10)
            sent.append(time.time())
        out.put((sent, client.stats.snapshot().rate_limit_wait_s))


def limited(duration: float, processes: int, state_url: str | None) -> tuple[str, str]:
    with Simulator(seed=12, manga_count=500, rate_limit=RATE) as sim:
        ctx = multiprocessing.get_context("fork")
        out: multiprocessing.Queue = ctx.Queue()
        procs = [
            ctx.Process(target=_hammer, args=(sim.url, state_url, duration, out))
            for _ in range(processes)
        ]
        started = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join(duration + 120)
            if p.exitcode != 0:
                raise SystemExit(f"a benchmark process failed (exit code {p.exitcode})")
        results = [out.get(timeout=5) for _ in procs]
        elapsed = time.perf_counter() - started
        with SimulatorAdmin(sim.url) as admin:
            stats = admin.stats()
    # Between the first and the last answer, so process start-up does not count against it.
    stamps = sorted(t for sent, _ in results for t in sent)
    achieved = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    waited = sum(w for _, w in results)
    label = f"limit {RATE:g}/s, {processes} process{'es' if processes > 1 else ''}" + (
        ", shared SQLite state" if state_url else ""
    )
    return (
        label,
        f"{achieved:.2f} req/s = **{achieved / RATE:.1%}** of the limit; "
        f"{stats['rate_limited']} × 429; max in any second {stats['max_per_second']}; "
        f"{stats['total']} requests in {elapsed:.1f} s; waited on limiter {waited:.1f} s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--manga", type=int, default=3000)
    args = parser.parse_args()
    rows = throughput(args.manga)
    rows.append(limited(args.duration, 1, None))
    with tempfile.TemporaryDirectory() as tmp:
        state = f"sqlite:///{Path(tmp) / 'mangahub.sqlite'}"
        upgrade(state)
        rows.append(limited(args.duration, args.processes, state))
    print("| measurement | result |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
