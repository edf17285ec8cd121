"""The sync commands an operator runs by hand, as subprocesses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import upgrade
from mangasync_pipeline.db.tables import manga
from mangasync_pipeline.mangadex.dates import as_utc
from mangasync_pipeline.mangadex.simulator import Simulator
from mangasync_pipeline_tests import web


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mangasync_pipeline.cli", *args],
                          env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=240)


@pytest.mark.process
def test_initial_sync_backfill_and_sync_manga_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    upgrade(url)
    with Simulator(seed=5, manga_count=300, rate_limit=None, chapters_per_manga=3) as sim:
        web.post(f"{sim.url}/_sim/manga", json={"count": 12, "day": "2022-02-02"})
        env = {"DATABASE_URL": url, "MANGADEX_API_URL": sim.url, "INITIAL_SYNC_LIMIT": "50",
               "MANGADEX_RATE_LIMIT": "200", "UDP_SERVER_URL": "http://127.0.0.1:9"}
        first = _run(["initial-sync"], env, tmp_path)
        assert first.returncode == 0, first.stderr
        assert "imported 50 manga (50 new)" in first.stdout
        again = _run(["initial-sync"], env, tmp_path)
        assert "already completed" in again.stdout

        filled = _run(["backfill", "--from", "2022-02-02", "--what", "catalogue"], env, tmp_path)
        assert filled.returncode == 0, filled.stderr
        assert "1 days:" in filled.stdout and "backfill" in filled.stderr  # the progress bar
        engine = make_engine(url)
        with engine.connect() as conn:
            on_day = conn.execute(select(func.count()).select_from(manga).where(
                func.date(manga.c.created_at) == "2022-02-02")).scalar()
            slug = conn.execute(select(manga.c.slug).limit(1)).scalar()
        assert on_day and on_day >= 10

        one = _run(["sync-manga", str(slug)], env, tmp_path)
        assert one.returncode == 0, one.stderr
        report = json.loads(one.stdout[:one.stdout.rindex("}") + 1])
        assert report["slug"] == slug and report["requests"] >= 2

        missing = _run(["sync-manga", "no-such-manga"], env, tmp_path)
        assert missing.returncode == 1
        assert "no manga 'no-such-manga' in the catalogue" in missing.stderr
        assert "Traceback" not in missing.stderr


def _visible_in(sim_url: str, first: str, after_last: str) -> int:
    """Manga MangaDex's default ratings show created in [first, after_last), by its totals."""
    def since(day: str) -> int:
        return int(web.get(f"{sim_url}/manga", params={
            "createdAtSince": f"{day}T00:00:00", "limit": "0"}).json()["total"])
    return since(first) - since(after_last)


def test_backfill_of_a_month_is_one_keyset_pass_with_counts_per_day(
        tmp_path: Path, db_url: str) -> None:
    with Simulator(seed=9, manga_count=40, rate_limit=None, chapters_per_manga=0) as sim:
        for n, day in ((150, "2022-03-02"), (40, "2022-03-05"), (260, "2022-03-20")):
            web.post(f"{sim.url}/_sim/manga", json={"count": n, "day": day})
        expected = _visible_in(sim.url, "2022-03-01", "2022-04-01")
        web.post(f"{sim.url}/_sim/stats/reset")
        env = {"DATABASE_URL": db_url, "MANGADEX_API_URL": sim.url,
               "MANGADEX_RATE_LIMIT": "200", "UDP_SERVER_URL": "http://127.0.0.1:9"}
        filled = _run(["backfill", "--from", "2022-03-01", "--to", "2022-03-31",
                       "--what", "catalogue"], env, tmp_path)
        assert filled.returncode == 0, filled.stderr
        requests = web.get(f"{sim.url}/_sim/stats").json()["requests"].get("/manga", 0)

    # The floor is a request per 100 manga; reading day by day would cost at least 31.
    floor = math.ceil(expected / 100)
    assert floor <= requests <= floor + 1
    assert "HTTP Request" not in filled.stderr  # the bar, not a log line per request
    assert "backfill catalogue" in filled.stderr and "31/31" in filled.stderr  # the bar counts days

    printed = {line.split()[0]: int(line.split()[1]) for line in filled.stdout.splitlines()
               if line[:4] == "2022"}
    engine = make_engine(db_url)
    with engine.connect() as conn:
        stored = Counter(as_utc(t).date().isoformat()
                         for t in conn.execute(select(manga.c.created_at)).scalars())
    engine.dispose()
    assert sum(stored.values()) == expected
    assert len(printed) == 31 and printed["2022-03-03"] == 0
    assert {d: n for d, n in printed.items() if n} == {
        d: n for d, n in stored.items() if d.startswith("2022-03")}
    assert f"31 days: {expected} manga read ({expected} new)" in filled.stdout


@pytest.mark.process
def test_backfill_refuses_days_without_a_partition_before_any_request(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    upgrade(url)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    with Simulator(seed=5, manga_count=5, rate_limit=None, chapters_per_manga=0) as sim:
        env = {"DATABASE_URL": url, "MANGADEX_API_URL": sim.url,
               "MANGASYNC_PARTITIONS_START": "2020-01-01", "UDP_SERVER_URL": "http://127.0.0.1:9"}
        for args, said in (
                (["--from", "2025-01-01", "--to", tomorrow], f"--to {tomorrow} is in the future"),
                (["--from", "2019-12-31"], "--from 2019-12-31 is before the first partition "
                                           "(MANGASYNC_PARTITIONS_START=2020-01-01)")):
            refused = _run(["backfill", *args], env, tmp_path)
            assert refused.returncode == 1
            assert refused.stderr.strip().startswith(f"Error: {said}")
            assert len(refused.stderr.strip().splitlines()) == 1
        assert web.get(f"{sim.url}/_sim/stats").json()["total"] == 0


@pytest.mark.process
def test_sync_manga_refuses_a_manga_outside_the_content_ratings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    upgrade(url)
    with Simulator(seed=5, manga_count=20, rate_limit=None, chapters_per_manga=1) as sim:
        mid = web.post(f"{sim.url}/_sim/manga", json={
            "contentRating": "pornographic"}).json()["ids"][0]
        env = {"DATABASE_URL": url, "MANGADEX_API_URL": sim.url, "MANGADEX_RATE_LIMIT": "200",
               "UDP_SERVER_URL": "http://127.0.0.1:9",
               "MANGASYNC_CONTENT_RATINGS": "safe,suggestive"}
        refused = _run(["sync-manga", mid], env, tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (f"manga {mid} is rated 'pornographic', outside MANGASYNC_CONTENT_RATINGS "
            "(safe, suggestive): not synced") in refused.stderr
    with make_engine(url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(manga)).scalar() == 0


@pytest.mark.process
def test_an_initial_sync_stopped_from_outside_leaves_no_state_running(tmp_path: Path) -> None:
    import signal
    import time

    from mangasync_pipeline.sync import state

    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    upgrade(url)
    with Simulator(seed=5, manga_count=20, rate_limit=None) as sim:
        web.post(f"{sim.url}/_sim/faults", json={"drip": 10, "drip_ms": 500})
        env = {"DATABASE_URL": url, "MANGADEX_API_URL": sim.url, "MANGADEX_RATE_LIMIT": "200",
               "UDP_SERVER_URL": "http://127.0.0.1:9"}
        proc = subprocess.Popen([sys.executable, "-m", "mangasync_pipeline.cli", "initial-sync"],
                                env={**os.environ, **env}, cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        engine = make_engine(url)

        def status() -> str | None:
            with engine.connect() as conn:
                row = state.get_state(conn, state.INITIAL_SYNC)
            return row["status"] if row else None

        deadline = time.monotonic() + 60
        while status() != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status() == "running"
        proc.send_signal(signal.SIGINT)  # what an operator's Ctrl-C (or a stop) does
        proc.communicate(timeout=60)
    assert proc.returncode != 0
    with engine.connect() as conn:
        row = state.get_state(conn, state.INITIAL_SYNC)
    assert row is not None and row["status"] == "error"
    assert row["error_message"].startswith("KeyboardInterrupt")
