"""End to end under the Dagster daemon: a chapter appears on the simulator, a reader's
`mangasync listen` prints it. The chapter sensor beside today's schedule.

    .venv/bin/python bench/bench_sensor.py [--chapters 8] [--backend sqlite] [--way both]

Everything runs as in production, each in its own process: the simulator at MangaDex's
5 requests/s, `mangasync server`, a `mangasync listen` client following the manga, and
`dagster-daemon run` on the shipped instance config (`ops/dagster_home.yaml`: queued run
coordinator, a run worker process per run) with every sensor and schedule on. `--chapters`
chapters appear one by one, each at a random instant of its own 40 s slot, on manga the
reader follows. Two ways:

- `sensor`: `new_chapters_sensor` every 30 s (CHAPTER_SENSOR_INTERVAL), the schedule as the
  safety net at its default 15 minutes;
- `schedule`: the sensor stopped, `new_chapters_schedule` at its most frequent, every minute.

Reported: latency from a chapter's creation to the line `mangasync listen` printed (median,
p95, max), the `new_chapters_job` runs launched and how many of them stored nothing, and the
MangaDex requests spent per minute: all of them, and those left after the runs' own requests
(from their metadata) and new_manga_sensor's `/manga` ones, i.e. what the chapter sensor's
ticks cost (the schedule's ticks cost none: it only starts runs). 8 chapters take about
6 minutes per way.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _common import (
    command,
    free_port,
    percentile,
    simulator_process,
    stop,
    table,
    throwaway_db,
)
from bench_chapters import Listener, wait_until
from sqlalchemy import select

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.tables import manga
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.mangadex.simulator import SimulatorAdmin
from mangasync_pipeline.sync.catalogue import SILENT, import_ids

RATE = 5.0
SLOT = 40.0  # seconds: one chapter appears somewhere in each slot
FOLLOWED = 4
ROOT = Path(__file__).resolve().parent.parent


def dagster_home(tmp: Path) -> Path:
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "mangasync_pipeline" / "ops" / "dagster_home.yaml", home / "dagster.yaml")
    return home


def run_way(way: str, backend: str, chapters: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmpdir, \
            simulator_process(rate_limit=RATE, manga=60, chapters_per_manga=3) as sim_url, \
            SimulatorAdmin(sim_url) as admin:
        tmp = Path(tmpdir)
        with throwaway_db(backend, tmp) as db:
            engine = make_engine(db)
            listed = httpx.get(f"{sim_url}/manga", params={
                "limit": FOLLOWED, "contentRating[]": "safe"}).json()["data"]
            followed = [m["id"] for m in listed]
            with MangaDexClient(sim_url, rate_limit=RATE) as client:
                import_ids(engine, client, followed, policy=SILENT)
            with engine.connect() as conn:
                titles = dict(conn.execute(select(manga.c.mangadex_id, manga.c.title)).all())
            http_port, udp_port = free_port(), free_port(kind=socket.SOCK_DGRAM)
            home = dagster_home(tmp)
            env = {**os.environ, "DATABASE_URL": db, "MANGADEX_API_URL": sim_url,
                   "MANGADEX_RATE_LIMIT": str(RATE), "MANGASYNC_HTTP_PORT": str(http_port),
                   "MANGASYNC_UDP_PORT": str(udp_port),
                   "UDP_SERVER_URL": f"http://127.0.0.1:{http_port}",
                   "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1",
                   "CHAPTER_POLL_INTERVAL": "1m" if way == "schedule" else "15m"}
            cli = [sys.executable, "-m", "mangasync_pipeline.cli"]
            token = subprocess.run([*cli, "users", "add", "bench"], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip()
            for mid in followed:
                subprocess.run([*cli, "library", "add", "bench", mid], env=env, check=True,
                               capture_output=True)
            workspace = ["-m", "mangasync_pipeline.definitions"]
            bin_dir = Path(sys.executable).parent
            if way == "schedule":
                subprocess.run([str(bin_dir / "dagster"), "sensor", "stop", *workspace,
                                "new_chapters_sensor"], env=env, cwd=tmp, check=True,
                               capture_output=True)
            server = subprocess.Popen([*cli, "server"], env=env, stderr=subprocess.DEVNULL)
            daemon = subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", *workspace],
                                      env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            listener: Listener | None = None
            base = f"http://127.0.0.1:{http_port}"
            try:
                wait_until(lambda: _ok(base), 60, "the server did not start")
                listener = Listener([*cli, "listen", "--user", "bench",
                                     "--udp-port", str(udp_port)],
                                    {**env, "MANGASYNC_READER_TOKEN": token})
                wait_until(lambda: httpx.get(f"{base}/health").json().get("udp", {}).get(
                    "sessions", 0) > 0, 30, "listen did not register")
                # The daemon is up once a sensor has asked MangaDex something.
                wait_until(lambda: admin.stats()["total"] > 0, 180, "the daemon did not start")
                time.sleep(SLOT)
                admin.reset_stats()
                started = time.time()
                appeared = _publish(admin, listener, followed, titles, chapters, rng)
                minutes = (time.time() - started) / 60
                stats = admin.stats()
            finally:
                if listener is not None:
                    stop(listener.proc)
                daemon.send_signal(2)
                try:
                    daemon.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    stop(daemon)
                stop(server)
                engine.dispose()
            runs = _runs(home)
    latencies = [printed - at for at, printed in appeared]
    return {"way": way, "latencies": latencies, "runs": runs, "minutes": minutes,
            "requests": int(stats["total"]), "by_endpoint": stats["requests"]}


def _ok(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _publish(admin: SimulatorAdmin, listener: Listener, followed: list[str],
             titles: dict[str, str], count: int, rng: random.Random
             ) -> list[tuple[float, float]]:
    """One chapter in each slot; returns (appeared, printed) per chapter once all printed."""
    appeared: list[tuple[float, str, str]] = []

    def publish() -> None:
        first = time.time()
        for i in range(count):
            time.sleep(max(0.0, first + (i + rng.random()) * SLOT - time.time()))
            mid = followed[i % len(followed)]
            number = str(900 + i)
            admin.add_chapters([{"manga": mid, "chapter": number, "language": "en",
                                 "group": "Bench Scans",
                                 "createdAt": datetime.now(UTC).isoformat(timespec="seconds")}])
            appeared.append((time.time(), mid, number))

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    deadline = time.time() + count * SLOT + 180
    while time.time() < deadline:
        if len(appeared) == count and all(listener.seen(titles[m], f"ch. {n}")
                                          for _, m, n in appeared):
            break
        time.sleep(0.5)
    publisher.join(timeout=1)
    out = []
    for at, mid, number in appeared:
        printed = listener.seen(titles[mid], f"ch. {number}")
        if printed is None:
            raise SystemExit(f"chapter {number} of manga {mid} never reached the listener")
        out.append((at, printed))
    return out


def _runs(home: Path) -> dict[str, int]:
    """new_chapters_job runs in the instance, and how many stored no chapter."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    instance = DagsterInstance.from_config(str(home))
    runs = instance.get_runs(filters=RunsFilter(job_name="new_chapters_job"))
    empty = requests = 0
    for run in runs:
        stored = 0
        for entry in instance.all_logs(run.run_id,
                                       of_type=DagsterEventType.ASSET_MATERIALIZATION):
            event = entry.dagster_event
            if event is not None and event.asset_key is not None:
                metadata = event.step_materialization_data.materialization.metadata
                stored += int(metadata["chapters_stored"].value or 0)
                requests += int(metadata["mangadex_requests"].value or 0)
        empty += stored == 0
    return {"runs": len(runs), "empty": empty, "requests": requests}


def _per_minute(requests: int, minutes: float) -> str:
    return f"{requests / minutes:.1f} ({requests / minutes / 60 / RATE:.1%} of 5/s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", type=int, default=8)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--way", default="both", choices=["sensor", "schedule", "both"])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    ways = ["sensor", "schedule"] if args.way == "both" else [args.way]
    results = [run_way(w, args.backend, args.chapters, args.seed) for w in ways]
    rows = []
    for r in results:
        lat = r["latencies"]
        rows.append([
            "`new_chapters_sensor` every 30 s (schedule every 15 min)" if r["way"] == "sensor"
            else "`new_chapters_schedule` every minute (sensor off)",
            str(len(lat)), f"{statistics.median(lat):.1f} s", f"{percentile(lat, 0.95):.1f} s",
            f"{max(lat):.1f} s", f"{r['runs']['runs']} ({r['runs']['empty']} stored nothing)",
            _per_minute(r["requests"], r["minutes"]),
            _per_minute(r["requests"] - r["runs"]["requests"]
                        - r["by_endpoint"].get("/manga", 0), r["minutes"])
            if r["way"] == "sensor" else "none (its ticks only start runs)",
            f"{r['minutes']:.1f} min"])
    print(f"`{command()}`\n")
    print(table(["way", "chapters", "latency median", "p95", "max",
                 "new_chapters runs", "MangaDex requests/min, all",
                 "of which the chapter sensor/schedule ticks", "measured over"], rows))
    for r in results:
        print(f"\n{r['way']}: requests by endpoint {r['by_endpoint']}")


if __name__ == "__main__":
    main()
