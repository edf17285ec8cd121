"""`build_definitions(settings)` builds everything from its argument: two code locations built
with two settings in one process each keep their own partitions, crons, sensor intervals,
freshness bounds, run tags and database, and one process opens one pool per database."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from dagster import (
    MAX_RUNTIME_SECONDS_TAG,
    AssetKey,
    DagsterInstance,
    Definitions,
    build_schedule_context,
    instance_for_test,
    materialize,
)
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from mangasync_pipeline.db.engine import make_engine, shared_engine
from mangasync_pipeline.db.tables import manga
from mangasync_pipeline.definitions import build_definitions
from mangasync_pipeline.defs.assets import MANGA_CATALOGUE, NEW_CHAPTERS
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline_tests.conftest import PG_ADMIN_DSN
from mangasync_pipeline_tests.sync_helpers import settings_for

pytestmark = pytest.mark.database

DAY = "2025-09-03"


def _manga_in(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(manga)).scalar() or 0)
    finally:
        engine.dispose()


def _freshness_seconds(defs: Definitions, key: AssetKey) -> float:
    graph = defs.resolve_asset_graph()
    check = next(k for k in graph.asset_check_keys
                 if k.asset_key == key and k.name == "freshness_check")
    params = graph.get_check_spec(check).metadata["dagster/freshness_params"]
    return float(params.data["lower_bound_delta_seconds"])


def _poll_tags(defs: Definitions) -> dict[str, str]:
    schedule = defs.resolve_schedule_def("new_chapters_schedule")
    at = datetime(2025, 9, 4, 12, 0, tzinfo=UTC)
    with instance_for_test() as instance:
        requests = schedule.evaluate_tick(build_schedule_context(
            instance=instance, scheduled_execution_time=at,
            repository_def=defs.get_repository_def())).run_requests or []
    assert [r.partition_key for r in requests] == ["2025-09-04"]
    return dict(requests[0].tags)


def test_two_settings_in_one_process_each_get_their_own_definitions(
        simulator: Simulator, sqlite_template: Path, pg_url: str, tmp_path: Path) -> None:
    with SimulatorAdmin(simulator.url) as admin:
        admin.add_manga(title="Made That Day", contentRating="safe",
                        createdAt=f"{DAY}T01:00:00+00:00")
    shutil.copyfile(sqlite_template, tmp_path / "a.sqlite")
    sqlite_url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    a = settings_for(sqlite_url, simulator.url, partitions_start=date(2025, 9, 1),
                     chapter_poll_interval=timedelta(minutes=5),
                     chapter_sensor_interval=timedelta(seconds=20),
                     new_manga_poll_interval=timedelta(minutes=1))
    b = settings_for(pg_url, simulator.url, partitions_start=date(2025, 9, 2),
                     chapter_poll_interval=timedelta(hours=2),
                     chapter_sensor_interval=timedelta(seconds=45),
                     new_manga_poll_interval=timedelta(minutes=10), mangadex_rate_limit=4.0)
    defs_a, defs_b = build_definitions(a), build_definitions(b)

    for defs, first in ((defs_a, "2025-09-01"), (defs_b, "2025-09-02")):
        for key in (MANGA_CATALOGUE, NEW_CHAPTERS):
            keys = defs.get_assets_def(key).partitions_def.get_partition_keys()  # type: ignore[union-attr]
            assert keys[0] == first
    assert defs_a.resolve_schedule_def("new_chapters_schedule").cron_schedule == "*/5 * * * *"
    assert defs_b.resolve_schedule_def("new_chapters_schedule").cron_schedule == "0 */2 * * *"
    assert [d.resolve_sensor_def("new_chapters_sensor").minimum_interval_seconds
            for d in (defs_a, defs_b)] == [20, 45]
    assert [d.resolve_sensor_def("new_manga_sensor").minimum_interval_seconds
            for d in (defs_a, defs_b)] == [60, 600]
    # Stale at three poll intervals of each.
    assert [_freshness_seconds(d, NEW_CHAPTERS) for d in (defs_a, defs_b)] == [900, 21600]
    assert [_freshness_seconds(d, MANGA_CATALOGUE) for d in (defs_a, defs_b)] == [180, 1800]
    # A poll's maximum runtime follows the rate limit its requests wait for.
    tags_a, tags_b = _poll_tags(defs_a), _poll_tags(defs_b)
    assert int(tags_b[MAX_RUNTIME_SECONDS_TAG]) > int(tags_a[MAX_RUNTIME_SECONDS_TAG])
    assert "sqlite" in defs_a.resolve_asset_graph().get(MANGA_CATALOGUE).kinds
    assert "postgres" in defs_b.resolve_asset_graph().get(MANGA_CATALOGUE).kinds

    # Each writes to its own database.
    with DagsterInstance.ephemeral() as instance:
        assert materialize([defs_a.get_assets_def(MANGA_CATALOGUE)], instance=instance,
                           resources=defs_a.resources, partition_key=DAY).success
        assert (_manga_in(sqlite_url), _manga_in(pg_url)) == (1, 0)
        assert materialize([defs_b.get_assets_def(MANGA_CATALOGUE)], instance=instance,
                           resources=defs_b.resources, partition_key=DAY).success
        assert (_manga_in(sqlite_url), _manga_in(pg_url)) == (1, 1)

    # The run on PostgreSQL sent its requests through the shared limiter and breaker: every
    # connection this process holds to that database is one of its one engine's pool.
    engine = shared_engine(b.database_url)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin_conn:
        backends = admin_conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
            (make_url(pg_url).database,)).fetchone()
    assert backends is not None
    assert backends[0] == engine.pool.checkedin() + engine.pool.checkedout()  # type: ignore[attr-defined]
