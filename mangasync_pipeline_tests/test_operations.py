"""What keeps an operator informed and Dagster's storage bounded: one line per failed run to
the alert webhook, and the daily pruning of old runs that keeps each partition's latest
materialization. Through Dagster's own APIs, against the simulator and real databases."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DagsterInvalidConfigError,
    DefaultScheduleStatus,
    MetadataValue,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, make_url, select

from mangasync_pipeline.config import ConfigError, Settings
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.tables import sync_metrics
from mangasync_pipeline.definitions import build_definitions
from mangasync_pipeline.defs.alerts import run_failure_alert_sensor
from mangasync_pipeline.defs.assets import GENRE_LINKS, MANGA_CATALOGUE, NEW_CHAPTERS
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline_tests import web
from mangasync_pipeline_tests.conftest import drop_pg_database, new_pg_database
from mangasync_pipeline_tests.sync_helpers import settings_for

ROOT = Path(__file__).resolve().parent.parent


class Webhook:
    """A chat webhook on loopback: records each body; `status` is what it answers."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.status = 200
        self.failures_first = 0  # answer 503 to this many requests before `status`
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                failing = len(hook.bodies) <= hook.failures_first
                self.send_response(503 if failing else hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ops/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


MISSING = "5b0a4f1e-0000-4000-8000-00000000dead"


def errors_counted(db_url: str) -> dict[str, float]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(sync_metrics.c.labels, sync_metrics.c.value).where(
                sync_metrics.c.name == "mangadex_sync_errors_total")).all()
    finally:
        engine.dispose()
    return {labels: float(value) for labels, value in rows}


def _failed_sync(defs_settings: Settings, instance: DagsterInstance):  # type: ignore[no-untyped-def]
    defs = build_definitions(defs_settings)
    result = defs.resolve_job_def("sync_manga_job").execute_in_process(
        run_config={"ops": {"sync_one_manga": {"config": {"mangadex_id": MISSING}}}},
        instance=instance, resources=defs.resources, raise_on_error=False)
    assert not result.success
    return defs, result


def _evaluate_for_failed_sync(settings: Settings) -> tuple[Any, Any]:
    """The sensor's answer for a failed run of sync_manga_job, and that run."""
    with instance_for_test() as instance:
        defs, result = _failed_sync(settings, instance)
        context = build_run_status_sensor_context(
            sensor_name="run_failure_alert_sensor", dagster_instance=instance,
            dagster_run=result.dagster_run, dagster_event=result.get_run_failure_event(),
            resources={"alert_webhook": defs.resources["alert_webhook"],
                       "mangahub": defs.resources["mangahub"]},
        ).for_run_failure()
        return run_failure_alert_sensor(context), result


def test_a_failed_run_is_one_line_at_the_webhook_with_its_id_and_reason(
        simulator: Simulator, db_url: str, webhook: Webhook) -> None:
    settings = settings_for(db_url, simulator.url, alert_webhook=webhook.url)
    answer, result = _evaluate_for_failed_sync(settings)
    assert answer is None and len(webhook.bodies) == 1
    # Counted once, by its job and the failure's kind, for /metrics.
    assert errors_counted(db_url) == {"error_code=mangadex_error,type=sync_manga": 1}
    text = webhook.bodies[0]["text"]
    assert isinstance(text, str) and "\n" not in text
    assert text.startswith(f"mangasync: run {result.run_id} of sync_manga_job failed: "
                           "step sync_one_manga: sync of manga " + MISSING)


def test_a_webhook_that_fails_once_still_gets_the_line(
        simulator: Simulator, db_url: str, webhook: Webhook) -> None:
    webhook.failures_first = 1
    settings = settings_for(db_url, simulator.url, alert_webhook=webhook.url)
    answer, result = _evaluate_for_failed_sync(settings)
    assert answer is None  # posted
    assert [b["text"] for b in webhook.bodies][-1].startswith(  # type: ignore[union-attr]
        f"mangasync: run {result.run_id} of sync_manga_job failed")
    assert len(webhook.bodies) == 2
    assert errors_counted(db_url) == {"error_code=mangadex_error,type=sync_manga": 1}


def test_a_webhook_that_keeps_refusing_is_tried_three_times_and_the_run_still_counted(
        simulator: Simulator, db_url: str, webhook: Webhook) -> None:
    """Dagster moves a run-status sensor past a run even when its tick fails, so the sensor
    never raises: it tries three times, logs, and counts the run for /metrics and alerts."""
    webhook.status = 500
    settings = settings_for(db_url, simulator.url, alert_webhook=webhook.url)
    answer, _ = _evaluate_for_failed_sync(settings)
    assert answer is not None and "the webhook failed" in str(answer.skip_message)
    assert len(webhook.bodies) == 3
    assert errors_counted(db_url) == {"error_code=mangadex_error,type=sync_manga": 1}


def test_alert_and_retention_settings_are_checked_in_one_line() -> None:
    for env, start in (({"MANGASYNC_ALERT_WEBHOOK": "slack"}, "MANGASYNC_ALERT_WEBHOOK='slack'"),
                       ({"MANGASYNC_RUN_RETENTION": "forever"},
                        "MANGASYNC_RUN_RETENTION='forever'")):
        with pytest.raises(ConfigError) as err:
            Settings.from_env(env)
        assert str(err.value).startswith(start) and "\n" not in str(err.value)
    assert Settings.from_env({}).run_retention == timedelta(days=30)


def test_pruning_deletes_old_runs_but_keeps_each_partitions_latest_materialization(
        make_simulator, db_url: str) -> None:  # type: ignore[no-untyped-def]
    sim = make_simulator(manga_count=0)
    with SimulatorAdmin(sim.url) as admin:
        for day in ("2025-09-02", "2025-09-03"):
            admin.add_manga(title=f"Made {day}", contentRating="safe",
                            createdAt=f"{day}T01:00:00+00:00")
    settings = settings_for(db_url, sim.url)
    defs = build_definitions(settings)
    catalogue = defs.get_assets_def(MANGA_CATALOGUE)
    with instance_for_test() as instance:
        runs = {}
        for name, day in (("first-02", "2025-09-02"), ("latest-02", "2025-09-02"),
                          ("latest-03", "2025-09-03")):
            runs[name] = materialize([catalogue], selection=[MANGA_CATALOGUE], instance=instance,
                                     resources=defs.resources, partition_key=day).run_id
        _, failed = _failed_sync(settings, instance)
        runs["failed"] = failed.run_id
        # Everything so far is older than the retention the prune job runs with.
        prune_defs = build_definitions(settings.replace(run_retention=timedelta(milliseconds=1)))
        pruned = prune_defs.resolve_job_def("prune_runs_job").execute_in_process(
            instance=instance, resources=prune_defs.resources)
        assert pruned.success
        left = {r.run_id for r in instance.get_runs()}
        assert left == {runs["latest-02"], runs["latest-03"], pruned.run_id}
        # The UI still shows both partitions materialized, by their latest runs.
        assert instance.get_materialized_partitions(MANGA_CATALOGUE) == {"2025-09-02",
                                                                          "2025-09-03"}
        outputs = [e for e in pruned.all_events if e.is_successful_output]
        values = {k: v.value for k, v in outputs[0].step_output_data.metadata.items()}
        assert (values["runs_deleted"], values["runs_kept_for_materializations"]) == (2, 2)


def test_the_retention_is_the_settings_and_run_config_cannot_shorten_it(db_url: str) -> None:
    defs = build_definitions(settings_for(db_url, "http://127.0.0.1:9"))
    with instance_for_test() as instance:
        job = defs.resolve_job_def("prune_runs_job")
        job.execute_in_process(instance=instance, resources=defs.resources)
        kept = {r.run_id for r in instance.get_runs()}
        # What a Launchpad edit would send: refused before the run starts, nothing deleted.
        with pytest.raises(DagsterInvalidConfigError, match="run_retention"):
            job.execute_in_process(
                instance=instance,
                run_config={"resources": {"run_retention": {"config": {"keep": "1ms"}}}})
        assert kept <= {r.run_id for r in instance.get_runs()}


def test_a_runs_figures_reach_metrics_with_the_seeds_names_and_types(
        make_simulator, db_url: str, server: ServerHandle) -> None:  # type: ignore[no-untyped-def]
    sim = make_simulator(manga_count=0)
    with SimulatorAdmin(sim.url) as admin:
        admin.add_manga(title="Made", contentRating="safe", createdAt="2025-09-02T01:00:00+00:00")
    defs = build_definitions(settings_for(db_url, sim.url))
    catalogue = defs.get_assets_def(MANGA_CATALOGUE)
    with instance_for_test() as instance:
        for _ in range(2):
            assert materialize([catalogue], selection=[MANGA_CATALOGUE], instance=instance,
                               resources=defs.resources, partition_key="2025-09-02").success
    text = web.get(f"{server.http_url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    runs = families["mangasync_mangadex_sync_runs"]
    assert runs.type == "counter"
    assert [(s.labels, s.value) for s in runs.samples] == [({"type": "catalogue"}, 2.0)]
    duration = families["mangasync_mangadex_sync_duration_seconds"]
    assert duration.type == "histogram"
    count = [s for s in duration.samples if s.name.endswith("_count")]
    assert [(s.labels, s.value) for s in count] == [({"type": "catalogue"}, 2.0)]
    inf = [s for s in duration.samples if s.labels.get("le") == "+Inf"]
    assert [s.value for s in inf] == [2.0]
    requests = families["mangasync_mangadex_api_requests"]
    assert requests.type == "counter"
    assert {s.labels["status_code"] for s in requests.samples} == {"200"}
    assert families["mangasync_mangadex_manga_synced"].samples[0].value == 1.0  # once: new


def _freshness(defs: Any, instance: DagsterInstance) -> bool:
    """The catalogue's freshness check as the freshness sensor's run evaluates it."""
    key = next(k for k in defs.resolve_asset_graph().asset_check_keys
               if k.name == "freshness_check" and k.asset_key == MANGA_CATALOGUE)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_check_selection={key}, asset_selection=set())
    result = job.execute_in_process(instance=instance, resources=defs.resources)
    return result.get_asset_check_evaluations()[0].passed


def test_a_quiet_poll_keeps_the_catalogue_fresh_and_a_stopped_one_turns_it_red(
        make_simulator, db_url: str) -> None:  # type: ignore[no-untyped-def]
    sim = make_simulator(manga_count=0)  # MangaDex has nothing new all along
    defs = build_definitions(settings_for(db_url, sim.url))
    sensor = defs.resolve_sensor_def("new_manga_sensor")
    with instance_for_test() as instance:
        # Last materialized an hour ago, more than three poll intervals: red, as when the
        # sensor has stopped.
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key=MANGA_CATALOGUE, partition="2025-09-02", metadata={
                "dagster/last_updated_timestamp": MetadataValue.timestamp(
                    datetime.now(UTC) - timedelta(hours=1))}))
        assert _freshness(defs, instance) is False
        # A poll that finds nothing requests no run but says the catalogue is current; the
        # daemon records what the tick reports.
        tick = sensor.evaluate_tick(build_sensor_context(
            instance=instance, resources=defs.resources, definitions=defs))
        assert not tick.run_requests
        for event in tick.asset_events:
            instance.report_runless_asset_event(event)
        assert _freshness(defs, instance) is True


def test_sync_and_refresh_jobs_put_what_they_wrote_on_the_asset_graph(
        make_simulator, db_url: str) -> None:  # type: ignore[no-untyped-def]
    sim = make_simulator(manga_count=0)
    with SimulatorAdmin(sim.url) as admin:
        mid = admin.add_manga(title="Graph", contentRating="safe",
                              createdAt="2025-09-02T01:00:00+00:00")["ids"][0]
        admin.add_chapters([
            {"manga": mid, "chapter": str(n), "language": "en",
             "createdAt": f"2025-09-0{2 + n}T05:00:00+00:00",
             "publishAt": f"2025-09-0{2 + n}T05:00:00+00:00"} for n in (1, 2)])
    defs = build_definitions(settings_for(db_url, sim.url))
    with instance_for_test() as instance:
        synced = defs.resolve_job_def("sync_manga_job").execute_in_process(
            run_config={"ops": {"sync_one_manga": {"config": {"mangadex_id": mid}}}},
            instance=instance, resources=defs.resources)
        assert synced.success
        assert instance.get_materialized_partitions(MANGA_CATALOGUE) == {"2025-09-02"}
        assert instance.get_materialized_partitions(GENRE_LINKS) == {"2025-09-02"}
        assert instance.get_materialized_partitions(NEW_CHAPTERS) == {"2025-09-03",
                                                                       "2025-09-04"}

        with SimulatorAdmin(sim.url) as admin:
            admin.update_manga(mid, status="completed")
        refreshed = defs.resolve_job_def("refresh_manga_job").execute_in_process(
            run_config={"ops": {"refresh_manga": {"config": {"mangadex_ids": [mid]}}}},
            instance=instance, resources=defs.resources)
        assert refreshed.success
        latest = instance.fetch_materializations(MANGA_CATALOGUE, limit=1).records[0]
        assert latest.run_id == refreshed.run_id
        event = latest.asset_materialization
        assert event is not None and event.partition == "2025-09-02"
        assert event.metadata["manga_updated"].value == 1


def test_work_that_keeps_failing_is_asked_for_again_less_and_less_often() -> None:
    from mangasync_pipeline.defs.sensors import retry_wait

    poll = timedelta(minutes=5)
    waits = [retry_wait(n, poll) for n in range(1, 8)]
    assert waits[:4] == [timedelta(0), poll, 2 * poll, 4 * poll]  # the first retry at once
    assert waits[-1] == timedelta(hours=2)  # then at most every two hours


@pytest.mark.database
@pytest.mark.parametrize("config", ["dagster.yaml", "mangasync_pipeline/ops/dagster_home.yaml",
                                    "docker/dagster.yaml"])
def test_every_instance_config_keeps_ticks_for_days_not_forever(
        config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As Dagster reads each shipped instance config: schedule and sensor ticks of every
    outcome are purged after a bounded number of days (Dagster keeps most forever unasked)."""
    shutil.copy(ROOT / config, tmp_path / "dagster.yaml")
    database = None
    if config.startswith("docker/"):
        database, url = new_pg_database("template0")
        where = make_url(url)
        for name, value in (("USER", where.username), ("PASSWORD", where.password or ""),
                            ("HOST", where.host), ("PORT", str(where.port or 5432)),
                            ("DB", where.database)):
            monkeypatch.setenv(f"DAGSTER_POSTGRES_{name}", str(value))
    try:
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            for kind in (InstigatorType.SCHEDULE, InstigatorType.SENSOR):
                kept = instance.get_tick_retention_settings(kind)
                for status in (TickStatus.SUCCESS, TickStatus.SKIPPED, TickStatus.FAILURE):
                    assert 0 < kept[status] <= 30, (kind, status, kept[status])
    finally:
        if database:
            drop_pg_database(database)


def test_the_outbox_checks_run_on_their_own_schedule_and_flag_an_old_notification(
        db_url: str, engine: Engine) -> None:
    """The backlog check belongs to the outbox, not to the catalogue: it is evaluated every
    15 minutes even when nothing new was synced, which is when a dead server goes unseen."""
    from mangasync_pipeline.sync import outbox

    with engine.begin() as conn:
        outbox.enqueue(conn, outbox.NEW_MANGA, {"manga_id": 1, "title": "Waiting"},
                       "new-manga:waiting", datetime.now(UTC) - timedelta(hours=2))
    defs = build_definitions(settings_for(db_url, "http://127.0.0.1:9"))
    schedule = defs.resolve_schedule_def("outbox_checks_schedule")
    assert schedule.cron_schedule == "*/15 * * * *"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    with instance_for_test() as instance:
        result = defs.resolve_job_def("outbox_checks_job").execute_in_process(
            instance=instance, resources=defs.resources)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"notification_outbox_backlog", "no_refused_notifications"}
    backlog = checks["notification_outbox_backlog"]
    assert not backlog.passed
    assert backlog.metadata["pending"].value == 1
    assert backlog.metadata["oldest_pending_age_seconds"].value >= 7200
    assert checks["no_refused_notifications"].passed
