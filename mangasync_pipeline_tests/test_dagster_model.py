"""The Dagster model as a data engineer meets it: subsettable catalogue assets, one
materialization per partition with its own counts, in-process UI runs, lineage, freshness,
the pandas report and the `dg` layout. Through Dagster's own APIs, against the simulator and
real databases."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AllPartitionMapping,
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    build_schedule_context,
    build_sensor_context,
    in_process_executor,
    instance_for_test,
    materialize,
)
from sqlalchemy import Engine, delete, insert, select

from mangasync_pipeline.db.tables import (
    chapters,
    manga,
    manga_genres,
    notification_outbox,
    user_library,
    users,
)
from mangasync_pipeline.definitions import build_definitions
from mangasync_pipeline.defs.assets import GENRE_LINKS, MANGA_CATALOGUE, NEW_CHAPTERS
from mangasync_pipeline.defs.report import MANGAHUB_REPORT
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline_tests.sync_helpers import Pipeline, count, settings_for

ROOT = Path(__file__).resolve().parent.parent
DAYS = ["2025-09-02", "2025-09-03", "2025-09-04"]
RANGE_TAGS = {"dagster/asset_partition_range_start": DAYS[0],
              "dagster/asset_partition_range_end": DAYS[-1]}


@pytest.fixture
def sim(make_simulator: Callable[..., Simulator]) -> Simulator:
    """No generated manga: 0, 1 and 2 created on the three days of DAYS, one more later."""
    simulator = make_simulator(manga_count=0)
    with SimulatorAdmin(simulator.url) as admin:
        for day, n in zip(DAYS, (0, 1, 2), strict=True):
            for i in range(n):
                admin.add_manga(title=f"Made {day} #{i}", contentRating="safe",
                                createdAt=f"{day}T0{i + 1}:00:00+00:00",
                                tags=["Action", "Comedy"])
        admin.add_manga(title="Later", contentRating="safe", createdAt="2025-09-10T00:00:00+00:00")
    return simulator


def by_partition(instance: DagsterInstance, key: AssetKey, field: str) -> dict[str, Any]:
    """The latest materialization's `field` for each partition of `key`."""
    found: dict[str, Any] = {}
    records = instance.fetch_materializations(key, limit=1000).records
    for record in sorted(records, key=lambda r: r.storage_id):
        event = record.asset_materialization
        assert event is not None
        if field in event.metadata:
            found[str(event.partition)] = event.metadata[field].value
    return found


def test_manga_catalogue_alone_over_a_range_reports_each_partition_truthfully(
        sim: Simulator, db_url: str, engine: Engine) -> None:
    defs = build_definitions(settings_for(db_url, sim.url))
    catalogue = defs.get_assets_def(MANGA_CATALOGUE)
    with instance_for_test() as instance:
        result = materialize([catalogue], selection=[MANGA_CATALOGUE], instance=instance,
                             resources=defs.resources, tags=RANGE_TAGS)
        assert result.success
        assert by_partition(instance, MANGA_CATALOGUE, "manga_inserted") == {
            "2025-09-02": 0, "2025-09-03": 1, "2025-09-04": 2}
        assert by_partition(instance, MANGA_CATALOGUE, "dagster/row_count") == {
            "2025-09-02": 0, "2025-09-03": 1, "2025-09-04": 2}
        # Run-wide figures are labelled as the range's, never as a partition's own.
        latest = instance.fetch_materializations(MANGA_CATALOGUE, limit=1).records[0]
        metadata = latest.asset_materialization.metadata  # type: ignore[union-attr]
        assert metadata["range"].value == "2025-09-02 .. 2025-09-04 (3 partitions)"
        assert "range_mangadex_requests" in metadata and "mangadex_requests" not in metadata
        # The catalogue writes genre links with its manga: materialized alone, it records what
        # it wrote there too, so those partitions do not stay "Missing".
        assert instance.get_materialized_partitions(GENRE_LINKS) == set(DAYS)
        linked = instance.fetch_materializations(GENRE_LINKS, limit=1).records[0]
        assert linked.asset_materialization.metadata["source"].value == \
            "manga_catalogue, materialized alone"  # type: ignore[union-attr]

        # A second run over the same days changes nothing, and says so partition by partition.
        materialize([catalogue], selection=[MANGA_CATALOGUE], instance=instance,
                    resources=defs.resources, tags=RANGE_TAGS)
        assert by_partition(instance, MANGA_CATALOGUE, "manga_inserted") == {
            d: 0 for d in DAYS}
        assert by_partition(instance, MANGA_CATALOGUE, "manga_seen") == {
            "2025-09-02": 0, "2025-09-03": 1, "2025-09-04": 2}
    assert count(engine, manga) == 3


def test_genre_links_alone_rebuilds_only_that_partitions_links(
        sim: Simulator, db_url: str, engine: Engine) -> None:
    defs = build_definitions(settings_for(db_url, sim.url))
    catalogue = defs.get_assets_def(MANGA_CATALOGUE)
    with instance_for_test() as instance:
        materialize([catalogue], instance=instance, resources=defs.resources, tags=RANGE_TAGS)
        with engine.connect() as conn:
            links_before = set(conn.execute(select(manga_genres)).all())
            day4 = list(conn.execute(select(manga.c.id).where(
                manga.c.created_at >= datetime(2025, 9, 4, tzinfo=UTC))).scalars())
        with engine.begin() as conn:
            conn.execute(delete(manga_genres))  # every link gone, on every day
        with SimulatorAdmin(sim.url) as admin:
            admin.reset_stats()
            result = materialize([catalogue], selection=[GENRE_LINKS], instance=instance,
                                 resources=defs.resources, partition_key="2025-09-04")
            stats = admin.stats()
        assert result.success
        with engine.connect() as conn:
            links_after = set(conn.execute(select(manga_genres)).all())
        # Day 4's links are back, day 3's are not: the partition is the unit.
        assert links_after == {link for link in links_before if link.manga_id in day4}
        assert len(links_after) == 4
        assert stats["requests"].get("/manga") == 1  # the partition's two manga, by id
        assert by_partition(instance, GENRE_LINKS, "genre_links_added")["2025-09-04"] == 4
        # The manga themselves were not re-materialized.
        assert len(instance.fetch_materializations(MANGA_CATALOGUE, limit=100).records) == 3


def test_new_chapters_range_gives_each_day_its_own_stored_count(
        make_simulator: Callable[..., Simulator], pg_url: str) -> None:
    sim = make_simulator(manga_count=0)
    with SimulatorAdmin(sim.url) as admin:
        dex_id = admin.add_manga(title="Serial", contentRating="safe",
                                 createdAt="2025-09-01T00:00:00+00:00")["ids"][0]
        admin.add_chapters([{"manga": dex_id, "chapter": str(n), "language": "en",
                             "publishAt": f"{day}T12:00:00+00:00",
                             "createdAt": f"{day}T12:00:00+00:00"}
                            for n, day in ((1, DAYS[0]), (2, DAYS[2]), (3, DAYS[2]))])
    defs = build_definitions(settings_for(pg_url, sim.url))
    catalogue = defs.get_assets_def(MANGA_CATALOGUE)
    with instance_for_test() as instance:
        materialize([catalogue], instance=instance, resources=defs.resources,
                    partition_key="2025-09-01")
        job = defs.resolve_job_def("new_chapters_job")
        assert job.execute_in_process(instance=instance, tags=RANGE_TAGS).success
        assert by_partition(instance, NEW_CHAPTERS, "chapters_stored") == {
            "2025-09-02": 1, "2025-09-03": 0, "2025-09-04": 2}
        latest = instance.fetch_materializations(NEW_CHAPTERS, limit=1).records[0]
        assert latest.asset_materialization.metadata[  # type: ignore[union-attr]
            "range_chapters_stored"].value == 3


def test_initial_sync_records_the_same_partitions_for_both_catalogue_assets(
        simulator: Simulator, pg_url: str) -> None:
    pipeline = Pipeline(settings_for(pg_url, simulator.url, initial_sync_limit=60))
    pipeline.run("initial_sync_job")
    catalogue_days = pipeline.instance.get_materialized_partitions(MANGA_CATALOGUE)
    assert len(catalogue_days) > 1
    assert pipeline.instance.get_materialized_partitions(GENRE_LINKS) == catalogue_days


@pytest.mark.database
def test_ui_runs_and_backfills_execute_in_process() -> None:
    defs = build_definitions(settings_for("sqlite:///unused.sqlite", "http://127.0.0.1:9"))
    # What the UI's "Materialize" and a backfill run: the implicit asset job.
    for keys in ([MANGA_CATALOGUE], [GENRE_LINKS], [NEW_CHAPTERS], [MANGAHUB_REPORT]):
        implicit = defs.resolve_implicit_job_def_def_for_assets(keys)
        assert implicit is not None and implicit.executor_def is in_process_executor
    for name in ("catalogue_job", "new_chapters_job", "mangahub_report_job"):
        assert defs.resolve_job_def(name).executor_def is in_process_executor


@pytest.mark.database
def test_schedule_polls_from_the_cursor_by_run_config() -> None:
    defs = build_definitions(settings_for("sqlite:///unused.sqlite", "http://127.0.0.1:9"))
    schedule = defs.resolve_schedule_def("new_chapters_schedule")
    at = datetime(2025, 9, 4, 0, 5, tzinfo=UTC)  # within the first interval after midnight
    # The schedule looks for polls in flight on the instance: an empty one has none.
    with instance_for_test() as instance:
        requests = list(schedule.evaluate_tick(
            build_schedule_context(instance=instance, scheduled_execution_time=at,
                                   repository_def=defs.get_repository_def())).run_requests or [])
    assert [r.partition_key for r in requests] == ["2025-09-04", "2025-09-03"]
    for request in requests:
        assert request.run_config["ops"]["new_chapters"]["config"]["from_cursor"] is True


@pytest.mark.database
def test_assets_carry_owners_tags_kinds_table_schema_and_lineage() -> None:
    defs = build_definitions(settings_for("sqlite:///unused.sqlite", "http://127.0.0.1:9"))
    graph = defs.resolve_asset_graph()
    tables = {MANGA_CATALOGUE: "manga", GENRE_LINKS: "manga_genres", NEW_CHAPTERS: "chapters"}
    for key, table in tables.items():
        spec = graph.get(key)
        assert spec.owners == ["team:mangasync"]
        assert spec.tags["source"] == "mangadex" and spec.tags["domain"]
        assert {"mangadex", "sqlite"} <= set(spec.kinds)
        assert spec.metadata["dagster/table_name"] == table
        columns = {c.name for c in spec.metadata["dagster/column_schema"].columns}
        assert {"id", "manga_id", "genre_id"} & columns
        assert ("manga_id" in columns) == (table != "manga")
    # new_chapters hangs under manga_catalogue in the graph; the mapping asks for nothing
    # a poll could wait on.
    chapters_node = graph.get(NEW_CHAPTERS)
    assert MANGA_CATALOGUE in chapters_node.parent_keys
    mapping = graph.get_partition_mapping(NEW_CHAPTERS, MANGA_CATALOGUE)
    assert isinstance(mapping, AllPartitionMapping)
    assert graph.get(MANGAHUB_REPORT).parent_keys >= {MANGA_CATALOGUE, NEW_CHAPTERS}


def test_freshness_checks_fail_at_three_intervals_and_the_sensor_evaluates_them(
        simulator: Simulator, pg_url: str) -> None:
    settings = settings_for(pg_url, simulator.url)
    defs = build_definitions(settings)
    catalogue = defs.get_assets_def(MANGA_CATALOGUE)
    checks = {key.asset_key: key for key in defs.resolve_asset_graph().asset_check_keys
              if key.name == "freshness_check"}
    assert set(checks) == {MANGA_CATALOGUE, NEW_CHAPTERS}
    sensor = defs.resolve_sensor_def("freshness_checks_sensor")
    with instance_for_test() as instance:
        tick = sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))
        requested = {k for r in tick.run_requests or [] for k in r.asset_check_keys or []}
        assert requested == set(checks.values())
        # A catalogue materialized now is fresh; nothing for new_chapters is overdue.
        materialize([catalogue], instance=instance, resources=defs.resources,
                    partition_key="2025-09-02")
        job = defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_check_selection=set(checks.values()), asset_selection=set())
        result = job.execute_in_process(instance=instance, resources=defs.resources)
        verdict = {e.asset_key: e.passed for e in result.get_asset_check_evaluations()}
        assert verdict == {MANGA_CATALOGUE: True, NEW_CHAPTERS: False}
        lower_bound = {MANGA_CATALOGUE: settings.new_manga_poll_interval,
                       NEW_CHAPTERS: settings.chapter_poll_interval}
        for evaluation in result.get_asset_check_evaluations():
            params = evaluation.metadata["dagster/freshness_params"].value
            assert params["lower_bound_delta_seconds"] == \
                3 * lower_bound[evaluation.asset_key].total_seconds()


def _seed_report_rows(engine: Engine, now: datetime) -> None:
    """Two manga, chapters in two languages, a reader following one, and the outbox."""
    with engine.begin() as conn:
        for i, status, rating in ((1, "ongoing", "safe"), (2, "completed", "erotica")):
            conn.execute(insert(manga).values(
                id=i, mangadex_id=f"00000000-0000-4000-8000-00000000000{i}", slug=f"m{i}",
                title=f"M{i}", status=status, content_rating=rating,
                created_at=now - timedelta(days=40),
                catalogued_at=now, updated_at=now))
        readable = now - timedelta(days=1)
        for n, lang in ((1, "en"), (2, "en"), (1, "fr")):
            conn.execute(insert(chapters).values(
                manga_id=1, mangadex_chapter_id=f"c-{n}-{lang}", chapter_number=n,
                translated_language=lang, readable_at=readable, notified=True,
                created_at=readable, updated_at=now))
            conn.execute(insert(notification_outbox).values(
                dedup_key=f"new-chapter:m1:{lang}:{n}", kind="new-chapter",
                payload={"manga_id": 1, "title": "M1", "chapter": str(n), "language": lang},
                status="delivered", attempts=1, next_attempt_at=readable,
                created_at=readable + timedelta(seconds=60 * n),
                delivered_at=readable + timedelta(seconds=90 * n)))
        user = conn.execute(insert(users).values(username="r", token_version=1, created_at=now)
                            .returning(users.c.id)).scalar_one()
        conn.execute(insert(user_library).values(user_id=user, manga_id=1, added_at=now))


def _table(metadata: Any, name: str) -> list[dict[str, Any]]:
    return [dict(r.data) for r in metadata[name].value.records]


def test_mangahub_report_publishes_tables_and_its_checks_catch_bad_rows(db_url: str,
                                                                      engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    _seed_report_rows(engine, now)
    defs = build_definitions(settings_for(db_url, "http://127.0.0.1:9"))
    result = materialize([defs.get_assets_def(MANGAHUB_REPORT)], resources=defs.resources)
    metadata = result.asset_materializations_for_node("mangahub_report")[0].metadata
    assert _table(metadata, "manga_by_status") == [{"status": "completed", "manga": 1},
                                                   {"status": "ongoing", "manga": 1}]
    assert _table(metadata, "manga_by_content_rating") == [
        {"content_rating": "erotica", "manga": 1}, {"content_rating": "safe", "manga": 1}]
    per_day = _table(metadata, "chapters_per_language_per_day")
    assert len(per_day) == 30
    yesterday = (now - timedelta(days=1)).date().isoformat()
    assert {k: v for k, v in per_day[-2].items()} == {"day": yesterday, "en": 2, "fr": 1}
    latency = {r["stage"]: r for r in _table(metadata, "notification_latency")}
    stored = latency["readable -> notification stored"]
    assert (stored["notifications"], stored["max_s"]) == (3, 120.0)
    assert latency["readable -> delivered to the server"]["p50_s"] == 90.0
    readers = {r["figure"]: r["value"] for r in _table(metadata, "readers_and_follows")}
    assert readers == {"readers": 1, "follows": 1, "readers following manga": 1,
                       "manga followed": 1}
    assert {r.check_name: r.passed for r in result.get_asset_check_evaluations()} == {
        "no_duplicate_announcements": True, "notifications_point_at_chapters": True}

    # Chapter 2 announced again as "2.0", and a notification for a chapter never stored.
    now_ = datetime.now(UTC)
    with engine.begin() as conn:
        for key, chapter in (("dup", "2.0"), ("ghost", "9")):
            conn.execute(insert(notification_outbox).values(
                dedup_key=key, kind="new-chapter", status="pending", attempts=0,
                payload={"manga_id": 1, "title": "M1", "chapter": chapter, "language": "en"},
                next_attempt_at=now_, created_at=now_))
    result = materialize([defs.get_assets_def(MANGAHUB_REPORT)], resources=defs.resources)
    evaluations = {r.check_name: r for r in result.get_asset_check_evaluations()}
    assert not evaluations["no_duplicate_announcements"].passed
    assert evaluations["no_duplicate_announcements"].metadata["duplicates"].value == 1
    assert not evaluations["notifications_point_at_chapters"].passed
    orphans = [dict(r.data) for r in
               evaluations["notifications_point_at_chapters"].metadata["examples"].value.records]
    assert [(o["chapter"], o["language"]) for o in orphans] == [("9", "en")]
    outbox = {r["status"]: r["notifications"] for r in
              _table(result.asset_materializations_for_node("mangahub_report")[0].metadata,
                     "outbox")}
    assert outbox == {"delivered": 3, "pending": 2}


# --- the code location as the UI and GraphQL see it -----------------------------------------

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

RESOURCE_CONFIG = """
query($selector: ResourceSelector!) {
  topLevelResourceDetailsOrError(resourceSelector: $selector) {
    ... on ResourceDetails { description configuredValues { key value type } }
  }
}
"""


@pytest.fixture
def location_env(sim: Simulator, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The environment the code location reads, pointed at this test's database and MangaDex."""
    # Heroku-style spelling, normalised once by Settings; a password (trust auth ignores it)
    # that the UI must never show.
    heroku = "postgres://" + pg_url.split("://", 1)[1].replace("@", ":s3cret-pw@", 1)
    for name, value in {"DATABASE_URL": heroku, "MANGADEX_API_URL": sim.url,
                        "MANGADEX_RATE_LIMIT": "1000", "UDP_SERVER_URL": "http://127.0.0.1:9",
                        "MANGASYNC_PARTITIONS_START": "2025-09-01"}.items():
        monkeypatch.setenv(name, value)
    yield pg_url


@pytest.mark.timeout(600)
def test_graphql_backfills_each_catalogue_asset_alone_and_runs_them_in_process(
        location_env: str, tmp_path: Path) -> None:
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster_graphql.test.utils import (
        define_out_of_process_context,
        execute_dagster_graphql,
        infer_resource_selector,
    )

    engine_url = location_env
    # Runs launch as soon as they are submitted (no queue daemon here).
    launch_now = {"run_coordinator": {"module": "dagster._core.run_coordinator",
                                      "class": "DefaultRunCoordinator"}}
    with instance_for_test(temp_dir=str(tmp_path), overrides=launch_now) as instance, \
            define_out_of_process_context(
            str(ROOT / "workspace.yaml"), None, instance) as context:
        assert [loc.name for loc in context.code_locations] == ["mangasync"]
        # The UI names the database and where its URL comes from, never the password; no
        # resource has run config to show a secret in.
        shown = {}
        for key in ("mangahub", "mangadex", "notifier", "settings", "alert_webhook"):
            resource = execute_dagster_graphql(context, RESOURCE_CONFIG, variables={
                "selector": infer_resource_selector(context, key)})
            shown[key] = resource.data["topLevelResourceDetailsOrError"]
            assert shown[key]["configuredValues"] == [], shown[key]
        assert "s3cret-pw" not in str(shown)
        assert "DATABASE_URL" in shown["mangahub"]["description"]
        assert "2025-09-01" in shown["settings"]["description"]
        for key in (MANGA_CATALOGUE, GENRE_LINKS):
            result = execute_dagster_graphql(context, LAUNCH_BACKFILL, variables={"params": {
                "partitionNames": DAYS, "assetSelection": [{"path": key.path}]}})
            launched = result.data["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            backfill = instance.get_backfill(launched["backfillId"])
            assert backfill is not None and backfill.asset_selection == [key]
            # What the daemon does: plan the backfill's run, launch it, until it completes.
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                list(execute_backfill_iteration(context.process_context, _quiet_logger()))
                runs = instance.get_runs(
                    RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
                if runs and all(r.is_finished for r in runs):
                    break
                time.sleep(0.5)
            assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS]
            engine_events = [e.message for e in instance.all_logs(runs[0].run_id)
                             if e.is_dagster_event and e.dagster_event.event_type_value
                             == "ENGINE_EVENT"]
            # One process for the whole run: no step subprocess.
            assert any("in process" in (m or "") for m in engine_events), engine_events
            assert not any("multiprocess" in (m or "").lower() for m in engine_events)
        assert sorted(by_partition(instance, MANGA_CATALOGUE, "manga_inserted").items()) == [
            ("2025-09-02", 0), ("2025-09-03", 1), ("2025-09-04", 2)]
        assert sorted(by_partition(instance, GENRE_LINKS, "dagster/row_count").items()) == [
            ("2025-09-02", 0), ("2025-09-03", 2), ("2025-09-04", 4)]
    assert engine_url


def _quiet_logger() -> Any:
    import logging

    return logging.getLogger("mangasync.tests.backfill")


# --- the dg layout ----------------------------------------------------------------------------

@pytest.mark.database
def test_every_defs_module_is_loaded_without_being_listed() -> None:
    """A module in defs/ that defines a sensor, job or asset at module level is part of the
    code location: nothing lists modules by hand."""
    import importlib
    import pkgutil

    from dagster import AssetsDefinition, JobDefinition, SensorDefinition

    import mangasync_pipeline.defs as package

    defs = build_definitions(settings_for("sqlite:///unused.sqlite", "http://127.0.0.1:9"))
    sensors = {s.name for s in defs.sensors or []}
    jobs = {getattr(j, "name", None) for j in defs.jobs or []}
    keys = set(defs.resolve_asset_graph().get_all_asset_keys())
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, SensorDefinition):
                assert value.name in sensors, (info.name, value.name)
            elif isinstance(value, JobDefinition):
                assert value.name in jobs, (info.name, value.name)
            elif isinstance(value, AssetsDefinition):
                assert set(value.keys) <= keys, (info.name, value.keys)
    assert "freshness_checks_sensor" in sensors and "mangahub_report_schedule" in {
        s.name for s in defs.schedules or []}


def _dg(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([str(Path(sys.executable).parent / "dg"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.process
def test_dg_sees_one_location_named_mangasync_and_can_scaffold(tmp_path: Path) -> None:
    checked = _dg(["check", "defs"], ROOT)  # what an operator runs after changing the project
    assert checked.returncode == 0, checked.stderr[-2000:]
    listed = _dg(["list", "defs", "--json"], ROOT)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "manga_catalogue" in listed.stdout and "mangahub_report" in listed.stdout
    # Scaffolding writes into the defs package (it crashed when defs_module named a file);
    # done on a copy of the project's layout so the real package is left alone.
    project = tmp_path / "project"
    (project / "mangasync_pipeline" / "defs").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    for init in ("mangasync_pipeline/__init__.py", "mangasync_pipeline/defs/__init__.py"):
        (project / init).write_text("")
    scaffold = _dg(["scaffold", "defs", "dagster.asset", "probe.py"], project)
    assert scaffold.returncode == 0, scaffold.stderr[-2000:]
    assert "def probe" in (project / "mangasync_pipeline" / "defs" / "probe.py").read_text()


@pytest.mark.process
def test_loading_the_definitions_warns_nothing(tmp_path: Path) -> None:
    """Every code server and run worker loads the definitions: a warning there repeats in the
    daemon's log once per run, so loading them must print none."""
    loaded = subprocess.run(
        [sys.executable, "-W", "default", "-c",
         "from mangasync_pipeline.definitions import build_definitions\n"
         "from mangasync_pipeline.config import Settings\n"
         "build_definitions(Settings()).get_repository_def()\n"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert "Warning" not in loaded.stderr, loaded.stderr[-2000:]


@pytest.mark.database
def test_local_start_names_the_location_mangasync_and_uses_the_root_dagster_yaml(
        tmp_path: Path) -> None:
    import yaml

    from mangasync_pipeline.ops.system import local_dagster_home, prepare_dagster_home

    # Outside a checkout: .dagster_home/ gets the packaged config and the workspace.
    assert local_dagster_home({}, tmp_path) == tmp_path / ".dagster_home"
    home = prepare_dagster_home(local_dagster_home({}, tmp_path))
    started = yaml.safe_load((home / "workspace.yaml").read_text())
    assert started == yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert started["load_from"][0]["python_module"]["location_name"] == "mangasync"
    # In a checkout's root (where scripts/run.sh starts), the root is DAGSTER_HOME: its
    # dagster.yaml and workspace.yaml are used as they stand; DAGSTER_HOME still wins.
    assert local_dagster_home({}, ROOT) == ROOT
    assert local_dagster_home({"DAGSTER_HOME": str(tmp_path)}, ROOT) == tmp_path
    # The root's config and the packaged one differ only in where the storage lives.
    root = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    packaged = yaml.safe_load((ROOT / "mangasync_pipeline" / "ops" / "dagster_home.yaml")
                              .read_text())
    for key in ("storage", "local_artifact_storage", "compute_logs"):
        assert ".dagster_home" in str(root.pop(key))
    assert root == packaged
