"""MangaDex outages: how fast a run fails, how many polls of one partition pile up, and what
catching up costs.

(a) Time to fail a `new_chapters_job` run (Dagster, in process, SQLite) with the default
    request policy, per fault: a storm of 503s, a hang (connections accepted, never answered),
    connection refused, and a run that meets the open breaker. Measured from the step's start
    (before its first request) to its failure, against `ClientPolicy.failure_bound()`.
(b) The most `new_chapters_job` runs in flight for one partition during a 10-minute hang, the
    real schedule replayed tick by tick against a Dagster instance: each requested run is
    recorded as started and fails one failure bound later (what a hang does to it).
(c) MangaDex requests spent catching up after a 1-hour outage against an hour of normal
    polling: the replayed timeline of `bench_chapters.py` (polls every 15 minutes, one-hour
    lookback, 20 new chapters/hour on 200 catalogued manga, 40/hour elsewhere); the outage
    hour's polls fail for real against refused connections.

    .venv/bin/python bench/bench_outages.py [--skip-hang]

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import command, table, throwaway_db
from bench_chapters import INTERVAL, LOOKBACK, add_traffic, build_catalogue, stored_among
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
    build_schedule_context,
)

from mangasync_pipeline.config import Settings, utcnow
from mangasync_pipeline.definitions import build_definitions
from mangasync_pipeline.defs.inflight import IN_FLIGHT
from mangasync_pipeline.defs.schedules import cron_for
from mangasync_pipeline.mangadex.client import open_client
from mangasync_pipeline.mangadex.errors import MangaDexError
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.mangadex.simulator.outage import OutageProxy
from mangasync_pipeline.sync.catalogue import SILENT, import_ids
from mangasync_pipeline.sync.chapters import sync_chapter_window

POLL = {"ops": {"new_chapters": {"config": {"from_cursor": True}}}}
POLICY = Settings().mangadex_policy
# The longest a run stayed STARTED in the outage that issue 9 reports (step retries included).
BEFORE_LIFETIME = 475.0


def settings_for(db: str, url: str) -> Settings:
    return Settings(database_url=db, mangadex_api_url=url,
                    udp_server_url="http://127.0.0.1:9", mangadex_rate_limit=5.0)


def step_seconds(instance: DagsterInstance, run_id: str) -> tuple[float, str]:
    logs = instance.all_logs(run_id)
    times = {e.dagster_event.event_type: e.timestamp for e in logs
             if e.dagster_event and e.dagster_event.event_type in (
                 DagsterEventType.STEP_START, DagsterEventType.STEP_FAILURE)}
    failure = next(e for e in logs if e.dagster_event
                   and e.dagster_event.event_type == DagsterEventType.STEP_FAILURE)
    data = failure.dagster_event.step_failure_data  # type: ignore[union-attr]
    text = data.user_failure_data.description if data.user_failure_data else ""
    return (times[DagsterEventType.STEP_FAILURE] - times[DagsterEventType.STEP_START],
            text or "")


def time_to_fail(kinds: list[str], tmp: Path) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for kind in kinds:
        with throwaway_db("sqlite", tmp) as db, \
                Simulator(seed=3, manga_count=5, rate_limit=None, chapters_per_manga=2) as sim, \
                SimulatorAdmin(sim.url) as admin, OutageProxy(sim.url) as proxy:
            settings = settings_for(db, proxy.url)
            with open_client(settings) as client:
                import_ids(_engine(db), client, [next(iter(sim.catalogue.manga))],
                           policy=SILENT)
            job = build_definitions(settings).resolve_job_def("new_chapters_job")
            instance = DagsterInstance.ephemeral()
            if kind == "storm":
                admin.set_faults(error_rate=1.0, error_status=503)
            else:
                proxy.set_mode("hang" if kind == "hang" else "refused")
            # Refused: the third run opens the breaker (10 failures), the fourth meets it.
            runs = 4 if kind == "refused" else 1
            for n in range(runs):
                result = job.execute_in_process(instance=instance, run_config=POLL,
                                                partition_key=utcnow().date().isoformat(),
                                                raise_on_error=False)
                seconds, text = step_seconds(instance, result.run_id)
                if n == 0 or n == runs - 1:
                    label = kind if n == 0 else "breaker already open"
                    rows.append([label, f"{seconds:.2f} s", f"{POLICY.failure_bound():.2f} s",
                                 f"`{text[:150]}...`"])
            proxy.set_mode("up")
    return rows


def _engine(db: str) -> Any:
    from mangasync_pipeline.db.engine import make_engine

    return make_engine(db)


def in_flight_replay(interval: timedelta, lifetime: float, outage: timedelta,
                     tmp: Path) -> tuple[int, int, int]:
    """(ticks, most in flight for one partition with the check, without it)."""
    defs = build_definitions(Settings())
    schedule = defs.resolve_schedule_def("new_chapters_schedule")
    repository = defs.get_repository_def()
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    ticks = [start + interval * k for k in range(int(outage / interval) + 1)
             if interval * k < outage]
    most = 0
    started: list[tuple[datetime, DagsterRun]] = []
    with DagsterInstance.local_temp(tempfile.mkdtemp(dir=tmp)) as inst:
        for at in ticks:
            for began, run in started:  # a hung run fails one failure bound after it began
                current = inst.get_run_by_id(run.run_id)
                if current and current.status == DagsterRunStatus.STARTED and \
                        (at - began).total_seconds() >= lifetime:
                    inst.report_run_failed(current)
            data = schedule.evaluate_tick(build_schedule_context(
                instance=inst, scheduled_execution_time=at, repository_def=repository))
            for request in data.run_requests or []:
                run = DagsterRun(job_name="new_chapters_job", run_id=str(uuid.uuid4()),
                                 status=DagsterRunStatus.STARTED,
                                 tags={**request.tags,
                                       "dagster/partition": request.partition_key or ""})
                inst.add_run(run)
                started.append((at, run))
            most = max(most, inst.get_runs_count(RunsFilter(
                job_name="new_chapters_job", statuses=IN_FLIGHT,
                tags={"dagster/partition": at.date().isoformat()})))
    # Without the check every tick requests a run, and each lives `lifetime` seconds.
    naive = max(sum(1 for t in ticks if timedelta(0) <= at - t < timedelta(seconds=lifetime))
                for at in ticks)
    return len(ticks), most, naive


def catch_up(tmp: Path, seed: int) -> list[list[Any]]:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    history_end = now - timedelta(days=30)
    start = history_end + timedelta(days=2)
    rng = random.Random(seed)
    with Simulator(seed=seed, manga_count=700, rate_limit=None, chapters_per_manga=20,
                   end=history_end) as sim, OutageProxy(sim.url) as proxy, \
            throwaway_db("sqlite", tmp) as db, SimulatorAdmin(sim.url) as admin:
        everyone = sorted(m.id for m in sim.catalogue.manga.values()
                          if m.content_rating != "pornographic")
        rng.shuffle(everyone)
        real, pool = everyone[:200], everyone[200:600]
        # Replayed time does not move the breaker's clock: a short open period stands in for
        # the five minutes that pass long before the 2:00 poll.
        settings = settings_for(db, proxy.url).replace(mangadex_policy=replace(
            POLICY, breaker_open_seconds=1.0))
        engine = _engine(db)
        with open_client(settings.replace(mangadex_api_url=sim.url)) as direct:
            build_catalogue(engine, direct, real, 200, start - timedelta(hours=1))
        numbers: dict[str, Any] = {}
        normal = add_traffic(sim, rng, start, 1.0, 20.0, real, numbers)
        add_traffic(sim, rng, start, 1.0, 40.0, pool, numbers)
        missed = add_traffic(sim, rng, start + timedelta(hours=1), 1.0, 20.0, real, numbers)
        add_traffic(sim, rng, start + timedelta(hours=1), 1.0, 40.0, pool, numbers)

        def poll(client: Any, at: datetime) -> int:
            before = admin.stats()["total"]
            sync_chapter_window(engine, client, ("en",), start - INTERVAL - LOOKBACK, at,
                                lookback=LOOKBACK)
            return int(admin.stats()["total"] - before)

        with open_client(settings) as client:
            normal_hour = sum(poll(client, start + INTERVAL * (k + 1)) for k in range(4))
            assert not set(normal.ids) - stored_among(engine, normal.ids)
            proxy.set_mode("refused")
            attempts_before = client.stats.snapshot().total_requests
            failed_polls = 0
            for k in range(3):  # 1:15, 1:30, 1:45 fail
                try:
                    poll(client, start + timedelta(hours=1) + INTERVAL * (k + 1))
                except MangaDexError:
                    failed_polls += 1
            attempts = client.stats.snapshot().total_requests - attempts_before
            proxy.set_mode("up")
            opened = client.breaker.state(fresh=True)
            if opened.state == "open" and opened.opened_until:
                # Replayed time: the breaker's open period has passed by the 2:00 poll.
                time.sleep(max(0.0, (opened.opened_until - utcnow()).total_seconds()) + 0.1)
            catch = poll(client, start + timedelta(hours=2))
        complete = not set(missed.ids) - stored_among(engine, missed.ids)
    return [
        ["an hour of normal polling (4 polls)", normal_hour, len(normal.ids), "all"],
        [f"1-hour outage: {failed_polls} failed polls", f"0 reached MangaDex ({attempts} "
         "attempts)", "-", "-"],
        ["the first poll after it", catch, len(missed.ids), "all" if complete else "NOT all"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-hang", action="store_true",
                        help="leave out the hang in (a), which takes about a minute")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"`{command()}`\n")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        kinds = ["storm", "refused"] + ([] if args.skip_hang else ["hang"])
        print("(a) time to fail a new_chapters_job run, default policy\n")
        print(table(["fault", "step start to failure", "bound", "failure (first 150 chars)"],
                    time_to_fail(kinds, tmp)))
        print("\n(b) most new_chapters_job runs in flight for one partition, 10-minute hang\n")
        lifetime = POLICY.failure_bound()
        rows = []
        for interval in (timedelta(minutes=15), timedelta(minutes=1)):
            ticks, most, naive = in_flight_replay(interval, lifetime, timedelta(minutes=10), tmp)
            _, _, before = in_flight_replay(interval, BEFORE_LIFETIME, timedelta(minutes=10), tmp)
            rows.append([f"`{cron_for(interval)}`", ticks, most, naive, before])
        print(table(["schedule", "ticks in the outage", "most in flight (this design)",
                     f"without the check, runs failing in {lifetime:.0f} s",
                     f"before: no check, runs living {BEFORE_LIFETIME:.0f} s"], rows))
        print("\n(c) MangaDex requests: catching up after a 1-hour outage\n")
        print(table(["period", "requests to MangaDex", "new chapters on catalogued manga",
                     "stored"], catch_up(tmp, args.seed)))


if __name__ == "__main__":
    main()
