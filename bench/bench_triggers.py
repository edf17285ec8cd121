"""Benchmark of the notification server's HTTP triggers and the outbox drain (docs/BENCHMARKS.md).

For each database it starts `mangasync server` as its own process on a fresh database with one
manga followed by 10 readers, then measures:
  1. NEW_CHAPTER triggers one at a time over one kept-alive connection: triggers/s, latency;
  2. the same from 50 concurrent callers, each on its own kept-alive connection;
  3. 10,000 notifications queued in the outbox handed over by the notifier (seconds).

The callers of 1 and 2 are wrk (Debian's package, `bench/wrk_triggers.lua`) when it is
installed: a C load generator leaves the 2 cores to the server and PostgreSQL, where 50 Python
threads took a third of them. Without wrk, or with --python-client, they are stdlib
connections in this process.

    .venv/bin/python bench/bench_triggers.py [--seconds 5] [--drain 10000] [--backend postgresql]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _common import BACKENDS, command, free_port, throwaway_db

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.notify.testing import add_manga, add_users, follow
from mangasync_pipeline.sync import outbox
from mangasync_pipeline.sync.notifier import Notifier

FOLLOWERS = 10


def _caller(port: int, manga_id: int, base: int, deadline: float, latencies: list[float],
            errors: dict[str, int]) -> None:
    """Triggers over one kept-alive connection until `deadline` (stdlib client: httpx's
    AsyncClient itself topped out near 70 requests/s at 50 concurrent callers here, even for
    a 400 that never reaches the database)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = 0
    while time.perf_counter() < deadline:
        i += 1
        body = json.dumps({"manga_id": manga_id, "title": "Bench", "chapter": base + i})
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/notify/new-chapter", body,
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
        except OSError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            conn.close()
            continue
        assert response.status == 202, response.status
        latencies.append(time.perf_counter() - t0)
    conn.close()


def callers(port: int, manga_id: int, seconds: float, count: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    threads = [threading.Thread(target=_caller, args=(port, manga_id, 1_000_000 * (w + 1),
                                                      deadline, latencies, errors))
               for w in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 1)

    return {"per_s": round(len(latencies) / elapsed, 1), "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "requests": len(latencies), "client": "http.client",
            "transport_errors": errors}


def wrk_callers(port: int, manga_id: int, seconds: float, count: int) -> dict[str, Any]:
    script = Path(__file__).resolve().parent / "wrk_triggers.lua"
    out = subprocess.run(
        ["wrk", "-t", str(min(count, 2)), "-c", str(count), "-d", f"{seconds:g}s",
         "-s", str(script), f"http://127.0.0.1:{port}"],
        env={**os.environ, "BENCH_MANGA_ID": str(manga_id)}, capture_output=True, text=True,
        check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["non_2xx"] == 0, result
    return {"per_s": round(result["requests"] / result["seconds"], 1),
            "p50_ms": round(result["p50_ms"], 1), "p99_ms": round(result["p99_ms"], 1),
            "requests": result["requests"], "client": "wrk",
            "transport_errors": {"socket": result["socket_errors"]}
            if result["socket_errors"] else {}}


def drain(url: str, http: str, manga_id: int, count: int) -> float:
    engine = make_engine(url)
    now = utcnow()
    with engine.begin() as conn:
        for n in range(count):
            outbox.enqueue(conn, outbox.NEW_CHAPTER, {"manga_id": manga_id, "title": "Drain",
                                                      "chapter": str(10_000_000 + n)},
                           f"drain:{n}", now)
    start = time.perf_counter()
    with Notifier(http, timeout=60) as notifier:
        report = notifier.deliver(engine)
    elapsed = time.perf_counter() - start
    assert report.delivered == count and report.pending == 0, report
    engine.dispose()
    return elapsed


def run(backend: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with throwaway_db(backend, tmp) as url:
        engine = make_engine(url)
        manga_id = add_manga(engine, "Benchmark Manga")
        users = add_users(engine, FOLLOWERS, prefix="bench")
        follow(engine, [u for u, _, _ in users], manga_id)
        engine.dispose()
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "MANGASYNC_HTTP_PORT": str(port),
               "MANGASYNC_UDP_PORT": str(free_port(kind=socket.SOCK_DGRAM))}
        log = open(tmp / f"server-{backend}.log", "w")  # noqa: SIM115 - as long as the server
        server = subprocess.Popen([sys.executable, "-m", "mangasync_pipeline.cli", "server"],
                                  env=env, stderr=log)
        http = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{http}/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            result: dict[str, Any] = {"database": backend}
            load = wrk_callers if shutil.which("wrk") and not args.python_client else callers
            result["one_at_a_time"] = load(port, manga_id, args.seconds, 1)
            result["concurrent_50"] = load(port, manga_id, args.seconds, 50)
            if args.drain:
                result[f"outbox_drain_{args.drain}_s"] = round(
                    drain(url, http, manga_id, args.drain), 2)
            return result
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--drain", type=int, default=10_000)
    parser.add_argument("--backend", choices=BACKENDS, action="append")
    parser.add_argument("--python-client", action="store_true",
                        help="stdlib connections in this process even where wrk is installed")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-triggers-"))
    print(command(), file=sys.stderr)
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    results = [run(backend, args, tmp) for backend in args.backend or BACKENDS]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
