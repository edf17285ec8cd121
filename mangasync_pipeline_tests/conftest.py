"""Shared fixtures: a migrated MangaHub database on SQLite and on PostgreSQL.

Every test that takes `db_url` runs twice, once per backend. PostgreSQL databases are cloned
from a template migrated once per test process, so a fresh database costs one CREATE DATABASE.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

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


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated, empty MangaHub database URL."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "mangahub.sqlite"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
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
