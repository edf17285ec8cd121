"""Shared fixtures: a migrated MangaHub database on SQLite and on PostgreSQL.

Every test that takes `db_url` runs twice, once per backend. Both are cloned from a template
migrated once per test process: a fresh PostgreSQL database costs one CREATE DATABASE, a fresh
SQLite one a file copy.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import upgrade

pytest_plugins = [
    "mangasync_pipeline_tests.notify_fixtures",
    "mangasync_pipeline_tests.receiver",
    "mangasync_pipeline_tests.simulator_fixtures",
]

PG_ADMIN_DSN = os.environ.get("MANGASYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].split("://", 1)[1]
    return f"postgresql+psycopg://{base}/{dbname}"


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = f"mangasync_tpl_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    upgrade(_pg_url(name))
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_pg_database(template: str) -> tuple[str, str]:
    name = f"mangasync_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name, _pg_url(name)


def drop_pg_database(name: str) -> None:
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "mangahub.sqlite"
    upgrade(f"sqlite:///{path}")
    # upgrade() closed its engine, so the file holds everything (no journal beside it).
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated, empty MangaHub database URL."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "mangahub.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name, url = new_pg_database(template)
    yield url
    drop_pg_database(name)


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A freshly migrated PostgreSQL database, for what only PostgreSQL does (LISTEN/NOTIFY)."""
    name, url = new_pg_database(pg_template)
    yield url
    drop_pg_database(name)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# Tests that take 5 s or more (mostly waiting on processes, sensors and timeouts), longest
# first. Run at the start, they overlap with the many short tests on the other workers instead
# of leaving one worker alone with a long test at the end. Only the order depends on this list.
SLOW_FIRST = (
    "test_ops_compose_live.py::",
    "test_browser.py::",
    "test_ops_run.py::test_demo",
    "test_dagster_model.py::test_graphql_backfills",
    "test_outages.py::test_after_an_hour_long_outage",
    "test_ops_run.py::test_run_offline",
    "test_dagster_model.py::test_dg_sees_one_location",
    "test_notify_keepalive.py::",
    "test_notify_cli.py::test_listen_says",
    "test_notify_delivery.py::test_a_live_session",
    "test_outages.py::test_a_run_fails_within_the_bound",
    "test_notify_delivery.py::test_every_notification_shows_once",
    "test_outages.py::test_status_and_health",
    "test_mangadex_client.py::test_a_tick_deadline",
    "test_chapter_reads.py::test_polling_every_minute",
    "test_outages.py::test_the_sensor_waits",
    "test_notify_http.py::test_triggers_fuzzed",
    "test_ops_docs.py::test_test_sh",
    "test_sync_catalogue.py::test_a_partition_of_over_10000",
    "test_mangadex_client.py::test_three_processes",
)


def _slow_rank(item: pytest.Item) -> int:
    return next((rank for rank, part in enumerate(SLOW_FIRST) if part in item.nodeid),
                len(SLOW_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_slow_rank)  # stable: the rest keep their order
