"""MangaDex outages through Dagster's own code: runs fail within the bound the policy sets, one
poll per partition, sensor ticks inside their deadline, and a full catch-up afterwards.

Faults: a storm of 503s (the simulator's own faults), a hang (connections accepted, never
answered) and connection refused (`OutageProxy` in front of the simulator). The budgets are
small so the tests are quick; every time limit asserted is computed from them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    build_schedule_context,
    build_sensor_context,
)
from sqlalchemy import Engine, select

from mangasync_pipeline.config import ClientPolicy, ConfigError, Settings, utcnow
from mangasync_pipeline.db.circuit import displayed_state
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import upgrade
from mangasync_pipeline.db.tables import chapters, manga, mangadex_circuit
from mangasync_pipeline.defs.inflight import run_in_flight
from mangasync_pipeline.defs.resources import MangaDexResource
from mangasync_pipeline.mangadex.client import open_client
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.mangadex.simulator.outage import OutageProxy
from mangasync_pipeline.notify.store import NotifyStore
from mangasync_pipeline.ops.status import collect_status, render_table
from mangasync_pipeline.sync.catalogue import SILENT, import_ids
from mangasync_pipeline_tests.sync_helpers import Pipeline, outbox_rows, settings_for

# One retry, two-second timeouts, the circuit opens on the third failure in a row.
POLICY = ClientPolicy(max_retries=1, backoff_base=0.05, backoff_max=0.2, connect_timeout=2.0,
                      read_timeout=2.0, breaker_threshold=3, breaker_open_seconds=15.0,
                      sensor_deadline=4.0)
# For the tests that wait for the breaker to let a probe through: nothing they assert while it
# is open takes more than a fraction of this, and waiting out 15 s would be most of their time.
QUICK_PROBE = replace(POLICY, breaker_open_seconds=4.0)
POLL = {"ops": {"new_chapters": {"config": {"from_cursor": True}}}}
LOCAL_INSTANCE_CONFIG = (Path(__file__).parents[1] / "mangasync_pipeline" / "ops"
                         / "dagster_home.yaml")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def local_instance(home: Path) -> DagsterInstance:
    """A persistent instance with the local set-up's own dagster.yaml."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(LOCAL_INSTANCE_CONFIG, home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


def wait_for(condition: Callable[[], Any], seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds} s")


@dataclass
class Outage:
    sim: Simulator
    admin: SimulatorAdmin
    proxy: OutageProxy
    pipeline: Pipeline
    engine: Engine

    def start(self, kind: str) -> None:
        if kind == "storm":
            self.admin.set_faults(error_rate=1.0, error_status=503)
        else:
            self.proxy.set_mode(kind)  # type: ignore[arg-type]

    def end(self) -> None:
        self.admin.clear_faults()
        self.proxy.set_mode("up")

    def add_manga(self, title: str, history: int) -> str:
        created = utcnow() - timedelta(days=365)
        mid = self.admin.add_manga(title={"en": title}, createdAt=iso(created))["ids"][0]
        self.admin.add_chapters([
            {"manga": mid, "chapter": str(n), "language": "en", "group": "Alpha Scans",
             "createdAt": iso(created + timedelta(days=n)),
             "publishAt": iso(created + timedelta(days=n))} for n in range(1, history + 1)])
        with open_client(self.pipeline.settings) as client:
            import_ids(self.engine, client, [mid], policy=SILENT)
        return mid

    def poll(self, partition: str | None = None) -> Any:
        return self.pipeline.run("new_chapters_job", partition_key=partition or today(),
                                 run_config=POLL, raise_on_error=False)

    def schedule_tick(self) -> Any:
        """The schedule evaluated now, as the daemon does."""
        defs = self.pipeline.defs
        schedule = defs.resolve_schedule_def("new_chapters_schedule")
        return schedule.evaluate_tick(build_schedule_context(
            instance=self.pipeline.instance, scheduled_execution_time=utcnow(),
            repository_def=defs.get_repository_def()))

    def mangadex_requests(self) -> int:
        # The process's client for these settings: the one the runs use.
        client = MangaDexResource(self.pipeline.settings).client()
        return client.stats.snapshot().total_requests

    def wait_for_probe(self) -> None:
        """Until the breaker lets a probe through (its open time is a few seconds here)."""
        def due() -> bool:
            with self.engine.connect() as conn:
                row = conn.execute(select(mangadex_circuit)).first()
            return row is None or displayed_state(row.state, row.opened_until, utcnow()) in (
                "closed", "half_open (probe due)")
        wait_for(due, self.pipeline.settings.mangadex_policy.breaker_open_seconds + 30)


def today() -> str:
    return utcnow().date().isoformat()


@pytest.fixture
def policy() -> ClientPolicy:
    """The client's budgets; a test parametrizes it to wait out a shorter open breaker."""
    return POLICY


@pytest.fixture
def outage(db_url: str, tmp_path: Path, policy: ClientPolicy) -> Iterator[Outage]:
    with Simulator(seed=5, manga_count=5, rate_limit=None, chapters_per_manga=0) as sim, \
            SimulatorAdmin(sim.url) as admin, OutageProxy(sim.url) as proxy:
        settings = settings_for(db_url, proxy.url, mangadex_policy=policy)
        pipeline = Pipeline(settings)
        pipeline.instance = local_instance(tmp_path / "dagster_home")
        engine = make_engine(db_url)
        try:
            yield Outage(sim, admin, proxy, pipeline, engine)
        finally:
            proxy.set_mode("up")  # free anything still hanging on it
            engine.dispose()
            pipeline.instance.dispose()


def failure_of(pipeline: Pipeline, run_id: str) -> tuple[str, float]:
    """The step's failure description and seconds from the step's start to its failure."""
    logs = pipeline.instance.all_logs(run_id)
    started = next(e.timestamp for e in logs
                   if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START)
    failed = next(e for e in logs if e.dagster_event
                  and e.dagster_event.event_type == DagsterEventType.STEP_FAILURE)
    data = failed.dagster_event.step_failure_data  # type: ignore[union-attr]
    assert data.error is not None and data.error.cause is None  # no chained traceback
    description = data.user_failure_data.description if data.user_failure_data else ""
    return description or "", failed.timestamp - started


@pytest.mark.parametrize("kind", ["storm", "hang", "refused"])
def test_a_run_fails_within_the_bound_then_fast_on_the_open_breaker(
    outage: Outage, kind: str
) -> None:
    outage.add_manga("Steady", history=3)
    assert outage.poll().success
    outage.start(kind)

    first = outage.poll()
    assert not first.success
    text, took = failure_of(outage.pipeline, first.run_id)
    assert "\n" not in text
    assert text.startswith(f"new_chapters {today()}: MangaDex GET /chapter failed after 2 attempts")
    assert "circuit closed (2 of 3 failures in a row)" in text
    assert took <= POLICY.failure_bound()

    # The third failure in a row opens the circuit: the run stops there, not after its retries.
    second = outage.poll()
    text, took = failure_of(outage.pipeline, second.run_id)
    assert "circuit open until" in text and "(next probe then)" in text and "\n" not in text
    assert took <= POLICY.failure_bound()

    spent = outage.mangadex_requests()
    third = outage.poll()
    text, _ = failure_of(outage.pipeline, third.run_id)
    assert text.startswith(f"new_chapters {today()}: MangaDex unavailable: circuit open until ")
    assert outage.mangadex_requests() == spent  # failed on the breaker, no request sent
    for run in (first, second, third):  # no step retry: the breaker would only fail it again
        assert not outage.pipeline.instance.all_logs(
            run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)


def test_while_a_poll_hangs_the_schedule_waits_and_the_sensor_skips_in_time(
    outage: Outage,
) -> None:
    outage.add_manga("Steady", history=3)
    outage.start("hang")
    instance = outage.pipeline.instance
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(outage.poll()))
    worker.start()
    try:
        running = wait_for(lambda: run_in_flight(instance, "new_chapters_job",
                                                 partition_key=today()))
        tick = outage.schedule_tick()
        assert not tick.run_requests
        assert f"new_chapters_job run {running.run_id[:8]} for {today()} is still" in (
            tick.skip_message or "")

        started = time.monotonic()
        outage.pipeline.evaluate_sensor("new_manga_sensor")
        took = time.monotonic() - started
        # The MangaDex part is held to the deadline; a second covers the tick's own queries.
        assert took <= POLICY.sensor_deadline + 1.0
    finally:
        worker.join(timeout=POLICY.failure_bound() + 60)
    assert results and not results[0].success


def test_the_sensor_keeps_its_starting_point_through_an_outage_at_start(outage: Outage) -> None:
    outage.start("refused")
    sensor = outage.pipeline.defs.resolve_sensor_def("new_manga_sensor")
    skips = []
    for _ in range(2):
        context = build_sensor_context(instance=outage.pipeline.instance,
                                       cursor=outage.pipeline.sensor_cursor,
                                       resources=outage.pipeline.resources(),
                                       definitions=outage.pipeline.defs)
        result = sensor.evaluate_tick(context)
        assert not result.run_requests
        skips.append(result.skip_message or "")
        outage.pipeline.sensor_cursor = result.cursor
        time.sleep(1.1)  # the window would slide by this much
    assert all(s.startswith("MangaDex not reachable, cursor kept at ") for s in skips)
    kept = [s.split("cursor kept at ")[1].split(":", 1)[0] for s in skips]
    assert kept[0] == kept[1]


@pytest.mark.parametrize("policy", [QUICK_PROBE], ids=["probe-after-4s"])
def test_after_an_hour_long_outage_the_next_polls_catch_up_and_announce_once(
    outage: Outage,
) -> None:
    old = {outage.add_manga("Old Favourite", history=5): 6,
           outage.add_manga("Other Favourite", history=3): 4}
    assert outage.poll().success
    for request in outage.pipeline.evaluate_sensor("new_manga_sensor"):
        raise AssertionError(f"nothing new yet, got {request}")

    outage.start("refused")
    # What MangaDex publishes while we cannot reach it (readable now, after the last poll).
    outage.admin.add_chapters([{"manga": mid, "chapter": str(n), "language": "en",
                                "group": "Alpha Scans"} for mid, n in old.items()])
    fresh = outage.admin.add_manga(count=2, createdAt=iso(utcnow()))["ids"]
    assert not outage.poll().success
    assert not outage.pipeline.evaluate_sensor("new_manga_sensor")

    outage.end()
    outage.wait_for_probe()
    assert outage.poll().success
    results = outage.pipeline.run_requests(outage.pipeline.evaluate_sensor("new_manga_sensor"))
    assert results and all(r.success for r in results)

    with outage.engine.connect() as conn:
        stored = set(conn.execute(select(manga.c.mangadex_id)).scalars())
        labels = {(mid, label) for mid, label in conn.execute(
            select(manga.c.mangadex_id, chapters.c.label).join(
                chapters, chapters.c.manga_id == manga.c.id))}
    assert set(fresh) <= stored
    assert {(mid, str(n)) for mid, n in old.items()} <= labels

    def announced() -> tuple[list[str], list[str]]:
        return ([r.dedup_key for r in outbox_rows(outage.engine, "new-chapter")],
                [r.dedup_key for r in outbox_rows(outage.engine, "new-manga")])

    chapter_keys, manga_keys = announced()
    assert len(chapter_keys) == 2 and len(set(chapter_keys)) == 2
    assert len(manga_keys) == 2 and len(set(manga_keys)) == 2
    # Polling again announces nothing twice.
    assert outage.poll().success
    outage.pipeline.run_requests(outage.pipeline.evaluate_sensor("new_manga_sensor"))
    assert announced() == (chapter_keys, manga_keys)


def test_run_logs_in_the_instance_carry_the_syncs_decisions(outage: Outage) -> None:
    mid = outage.add_manga("Logged", history=2)  # local id 1
    assert outage.poll().success
    outage.admin.add_chapters([{"manga": mid, "chapter": "3", "language": "en",
                                "group": "Alpha Scans"}])
    result = outage.poll()
    assert result.success
    messages = [e.user_message for e in outage.pipeline.instance.all_logs(result.run_id)
                if e.dagster_event is None]
    # The sync's own logger (mangasync.sync.chapters), with the chapter's and the manga's ids.
    assert any(m.startswith("new chapter ") and "of manga 1 (Logged) ch 3 [en]: queued" in m
               for m in messages), messages


def test_every_requested_run_has_a_maximum_runtime_and_monitoring_enforces_it(
    outage: Outage,
) -> None:
    instance = outage.pipeline.instance
    assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds > 0
    assert instance.get_settings("sensors")["use_threads"]
    assert instance.get_settings("schedules")["use_threads"]
    tick = outage.schedule_tick()
    assert tick.run_requests
    assert all(int(r.tags["dagster/max_runtime"]) > 0 for r in tick.run_requests)
    outage.admin.add_manga(count=1, createdAt=iso(utcnow()))
    requests = outage.pipeline.evaluate_sensor("new_manga_sensor")
    assert requests and all(int(r.tags["dagster/max_runtime"]) > 0 for r in requests)


@pytest.mark.parametrize("policy", [QUICK_PROBE], ids=["probe-after-4s"])
def test_status_and_health_show_a_probe_due_without_calling_mangadex(outage: Outage) -> None:
    outage.add_manga("Steady", history=1)
    outage.start("refused")
    for _ in range(2):
        outage.poll()  # 2 + 2 failed attempts: the circuit opens for a few seconds
    store = NotifyStore(outage.engine)
    assert store.health()["mangadex"]["breaker"] == "open"
    assert [b.state for b in collect_status(outage.engine).breakers] == ["open"]
    spent = outage.mangadex_requests()
    wait_for(lambda: store.health()["mangadex"]["breaker"] == "half_open (probe due)",
             outage.pipeline.settings.mangadex_policy.breaker_open_seconds + 30)
    report = collect_status(outage.engine)
    assert [b.state for b in report.breakers] == ["half_open (probe due)"]
    assert "breaker mangadex half_open (probe due)" in render_table(report)
    assert outage.mangadex_requests() == spent


@pytest.mark.parametrize(("env", "message"), [
    ({"MANGADEX_MAX_RETRIES": "-1"}, "MANGADEX_MAX_RETRIES='-1': must be greater than zero"),
    ({"MANGADEX_READ_TIMEOUT": "soon"}, "MANGADEX_READ_TIMEOUT='soon': not an interval"),
    ({"MANGADEX_BREAKER_THRESHOLD": "0"}, "MANGADEX_BREAKER_THRESHOLD='0': must be greater"),
    ({"MANGADEX_SENSOR_DEADLINE": "55s"}, "MANGADEX_SENSOR_DEADLINE='55s': must leave 10 s"),
])
def test_a_bad_policy_setting_is_one_line_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_policy_reaches_the_resource_and_the_bound_follows_it() -> None:
    settings = Settings.from_env({"MANGADEX_MAX_RETRIES": "0", "MANGADEX_READ_TIMEOUT": "3s",
                                  "MANGADEX_CONNECT_TIMEOUT": "1s", "MANGADEX_BREAKER_OPEN": "2m"})
    resource = MangaDexResource(settings)
    assert (resource.policy.max_retries, resource.policy.read_timeout,
            resource.policy.breaker_open_seconds) == (0, 3.0, 120.0)
    assert resource.failure_bound() == 4.0  # one attempt: connect + read
    assert Settings.from_env({}).mangadex_policy.failure_bound() <= 90  # the README's promise


@pytest.mark.process
def test_the_cli_stops_retrying_when_the_breaker_opens_and_says_so_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    upgrade(url)
    with Simulator(seed=5, manga_count=5, rate_limit=None, chapters_per_manga=0) as sim, \
            SimulatorAdmin(sim.url) as admin:
        admin.set_faults(error_rate=1.0, error_status=503)
        env = {**os.environ, "DATABASE_URL": url, "MANGADEX_API_URL": sim.url,
               "UDP_SERVER_URL": "http://127.0.0.1:9", "MANGADEX_MAX_RETRIES": "5",
               "MANGADEX_BREAKER_THRESHOLD": "3", "MANGADEX_BACKOFF_BASE": "50ms",
               "MANGADEX_BACKOFF_MAX": "100ms"}
        done = subprocess.run(
            [sys.executable, "-m", "mangasync_pipeline.cli", "sync-manga",
             "5b0a4f1e-0000-4000-8000-000000000000"], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=120)
        assert admin.stats()["total"] == 3  # the breaker's threshold, not the 6 retries allow
    assert done.returncode == 1
    err = done.stderr
    assert err.count("MangaDex unreachable: circuit open until") == 1
    assert "retrying" not in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        "Error: MangaDex unavailable: circuit open until ")


def test_the_sensor_waits_for_its_run_in_flight_without_asking_mangadex(outage: Outage) -> None:
    outage.add_manga("Steady", history=1)
    assert not outage.pipeline.evaluate_sensor("new_manga_sensor")  # the starting point
    outage.admin.add_manga(count=1, createdAt=iso(utcnow()))
    requests = outage.pipeline.evaluate_sensor("new_manga_sensor")
    assert len(requests) == 1
    outage.start("hang")
    instance = outage.pipeline.instance
    request = requests[0]
    worker = threading.Thread(target=lambda: outage.pipeline.run(
        request.job_name or "", partition_key=request.partition_key,
        run_config=request.run_config, tags=dict(request.tags), raise_on_error=False))
    worker.start()
    try:
        running = wait_for(lambda: run_in_flight(instance, "catalogue_job"))
        accepted = outage.proxy.accepted
        sensor = outage.pipeline.defs.resolve_sensor_def("new_manga_sensor")
        result = sensor.evaluate_tick(build_sensor_context(
            instance=instance, cursor=outage.pipeline.sensor_cursor,
            resources=outage.pipeline.resources(), definitions=outage.pipeline.defs))
        assert not result.run_requests
        assert re.fullmatch(
            f"catalogue_job run {running.run_id[:8]} for {running.tags['dagster/partition']} "
            "is still (NOT_STARTED|STARTING|STARTED); detection waits for it",
            result.skip_message or "")
        assert outage.proxy.accepted == accepted  # decided without a MangaDex request
    finally:
        worker.join(timeout=POLICY.failure_bound() + 60)


def test_the_production_instance_config_logs_and_monitors_runs_as_the_local_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster._core.instance.config import dagster_instance_config

    for name in ("USER", "PASSWORD", "HOST", "DB"):
        monkeypatch.setenv(f"DAGSTER_POSTGRES_{name}", "x")
    monkeypatch.setenv("DAGSTER_POSTGRES_PORT", "5432")
    production, _ = dagster_instance_config(str(LOCAL_INSTANCE_CONFIG.parents[2] / "docker"),
                                            "dagster.yaml")
    local, _ = dagster_instance_config(str(LOCAL_INSTANCE_CONFIG.parent),
                                       LOCAL_INSTANCE_CONFIG.name)
    for config in (production, local):
        assert config["python_logs"]["managed_python_loggers"] == ["mangasync"]
        assert config["run_monitoring"]["enabled"]
        assert config["run_monitoring"]["max_runtime_seconds"] > 0
        assert config["sensors"]["use_threads"] and config["schedules"]["use_threads"]
