"""Shared fixtures: a migrated MangaHub database on SQLite and on PostgreSQL.

Every test that takes `db_url` runs twice, once per backend. Both are cloned from a template
migrated once per test process: a fresh PostgreSQL database costs one CREATE DATABASE, a fresh
SQLite one a file copy.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import psycopg2
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


# Creating a database from the template and dropping it costs PostgreSQL about 0.13 s of CPU,
# a tenth of the suite's CPU over its PostgreSQL tests. Each test process keeps the databases
# its tests are done with and hands them out again emptied: no session left on them, the
# tables a test added dropped, every table truncated with its sequences restarted. One that
# still differs from the template afterwards in anything the check below reads (columns with
# their types, lengths and defaults, constraints, triggers and whether they are enabled, rules,
# policies, sequences, functions, schemas, comments, large objects, the database's own
# settings), or that someone reconnected to, is dropped instead: a constraint one test added
# once refused the next test's rows.
_SCHEMA = """
SELECT md5(coalesce(string_agg(item, ';' ORDER BY item), '')) FROM (
  SELECT 'c:' || table_name || '.' || column_name || ':' || data_type || ':'
         || coalesce(character_maximum_length::text, '') || ':'
         || coalesce(numeric_precision::text, '') || ',' || coalesce(numeric_scale::text, '')
         || ':' || coalesce(collation_name, '') || ':' || coalesce(column_default, '') || ':'
         || is_nullable || ':' || is_identity AS item
    FROM information_schema.columns WHERE table_schema = 'public'
  UNION ALL SELECT 'r:' || c.relname || ':' || c.relkind::text || c.relpersistence::text
         || ':' || c.relrowsecurity || c.relforcerowsecurity || ':'
         || coalesce(c.relacl::text, '') || ':'
         || coalesce(obj_description(c.oid, 'pg_class'), '')
    FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL SELECT 'y:' || viewname || ':' || definition FROM pg_views
    WHERE schemaname = 'public'
  UNION ALL SELECT 'm:' || enumtypid::regtype || ':' || enumlabel FROM pg_enum
  UNION ALL SELECT 'q:' || schemaname || '.' || sequencename || ':' || start_value || ':'
         || increment_by || ':' || min_value || ':' || max_value || ':' || cycle
    FROM pg_sequences WHERE schemaname = 'public'
  UNION ALL SELECT 'e:' || evtname || ':' || evtenabled::text FROM pg_event_trigger
  UNION ALL SELECT 'l:' || count(*) FROM pg_largeobject_metadata
  UNION ALL SELECT 'k:' || conrelid::regclass || '.' || conname || ':'
         || pg_get_constraintdef(oid) FROM pg_constraint
    WHERE connamespace = 'public'::regnamespace
  UNION ALL SELECT 'g:' || tgname || ':' || tgenabled::text || ':' || pg_get_triggerdef(oid)
    FROM pg_trigger
  UNION ALL SELECT 'w:' || pg_get_ruledef(oid) FROM pg_rewrite WHERE rulename <> '_RETURN'
  UNION ALL SELECT 'p:' || polrelid::regclass || '.' || polname || ':'
         || coalesce(pg_get_expr(polqual, polrelid), '') || ':'
         || coalesce(pg_get_expr(polwithcheck, polrelid), '') FROM pg_policy
  UNION ALL SELECT 'i:' || indexdef FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL SELECT 'v:' || version_num FROM alembic_version
  UNION ALL SELECT 'o:' || p.oid::regprocedure::text || ':' || md5(p.prosrc) FROM pg_proc p
    WHERE p.pronamespace = 'public'::regnamespace
  UNION ALL SELECT 't:' || t.typname FROM pg_type t
    WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd', 'r')
  UNION ALL SELECT 'n:' || nspname FROM pg_namespace
    WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
  UNION ALL SELECT 'x:' || extname FROM pg_extension
  UNION ALL SELECT 'd:' || datallowconn || ':' || datconnlimit FROM pg_database
    WHERE datname = current_database()
  UNION ALL SELECT 's:' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS schema
"""
_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
# Other clients' sessions (autovacuum's workers are not a test's leftovers).
_OTHERS_WHERE = ("datname = current_database() AND pid <> pg_backend_pid() "
                 "AND backend_type = 'client backend'")
_OTHERS = f"SELECT count(*) FROM pg_stat_activity WHERE {_OTHERS_WHERE}"
_idle_pg: list[str] = []
_pg_shape: dict[str, tuple[str, frozenset[str]]] = {}


def _pg_connect(dbname: str) -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{dbname}", autocommit=True)


def _shape(conn: psycopg.Connection) -> tuple[str, frozenset[str]]:
    digest = conn.execute(_SCHEMA).fetchone()[0]  # type: ignore[index]
    return digest, frozenset(row[0] for row in conn.execute(_TABLES))


def _emptied(name: str, template: str) -> bool:
    """The database as the template left it, if a test's leftovers can be cleared away."""
    if template not in _pg_shape:
        with _pg_connect(template) as conn:
            _pg_shape[template] = _shape(conn)
    digest, tables = _pg_shape[template]
    try:
        return _cleared(name, tables) == (digest, tables)
    except psycopg.Error:  # a test shut it (ALLOW_CONNECTIONS false) or dropped a table
        return False


def _cleared(name: str, tables: frozenset[str]) -> tuple[str, frozenset[str]] | None:
    """The database's shape once its sessions, added tables and rows are gone."""
    with _pg_connect(name) as conn:
        # A lock left behind is an error here (the database is then dropped), not a
        # teardown that hangs until the test's timeout.
        conn.execute("SET lock_timeout = '5s'")
        for _ in range(200):  # a terminated session takes a moment to leave
            others = conn.execute(  # type: ignore[arg-type]
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE {_OTHERS_WHERE}").fetchone()
            if not others or others[0] == 0:
                break
            time.sleep(0.01)
        else:
            return None
        added = {row[0] for row in conn.execute(_TABLES)} - tables
        for table in sorted(added):
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')  # type: ignore[arg-type]
        emptied = ", ".join(f'"{t}"' for t in sorted(tables - {"alembic_version"}))
        conn.execute(f"TRUNCATE {emptied} RESTART IDENTITY CASCADE")  # type: ignore[arg-type]
        if conn.execute(_OTHERS).fetchone() != (0,):
            return None  # something reconnected (a process a test left running): not reused
        return _shape(conn)


def pg_database(template: str) -> Iterator[str]:
    """A migrated, empty PostgreSQL database of this process's, for one test."""
    name = _idle_pg.pop() if _idle_pg else new_pg_database(template)[0]
    yield _pg_url(name)
    if _emptied(name, template):
        _idle_pg.append(name)
    else:
        drop_pg_database(name)


@pytest.fixture(scope="session", autouse=True)
def _drop_idle_pg_databases() -> Iterator[None]:
    yield
    while _idle_pg:
        drop_pg_database(_idle_pg.pop())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated, empty MangaHub database URL."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "mangahub.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    yield from pg_database(request.getfixturevalue("pg_template"))


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A freshly migrated PostgreSQL database, for what only PostgreSQL does (LISTEN/NOTIFY)."""
    yield from pg_database(pg_template)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def collector_on() -> Iterator[None]:
    """The cyclic garbage collector enabled for the test, as it was after it."""
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


# ---- layers --------------------------------------------------------------------------------
# Every test carries one layer marker. `pytest -m unit` is the fast layer: pure rules, no
# database, no socket, no subprocess, which the guard below enforces, so a test that needs
# more and is not marked fails with the reason instead of slowing the layer down.
# Loading the Dagster definitions may read Dagster's own storage (the instance a test before it
# left current), so tests that build them are `database`, not `unit`.
LAYERS = ("unit", "database", "process", "browser", "docker")
DATABASE_FIXTURES = {"db_url", "pg_url", "engine", "pg_template", "sqlite_template"}
PROCESS_FIXTURES = {"simulator", "make_simulator", "simulator_admin", "server", "receiver"}


def layer_of(item: pytest.Item) -> str:
    marked = [m.name for m in item.iter_markers() if m.name in LAYERS]
    if marked:
        return marked[0]  # the closest: a test's own marker over its module's
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & PROCESS_FIXTURES:
        return "process"
    if fixtures & DATABASE_FIXTURES:
        return "database"
    return "unit"


class _Forbidden(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _unit_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if layer_of(request.node) != "unit":
        return

    def refuse(what: str) -> Callable[..., object]:
        def _refuse(*_args: object, **_kwargs: object) -> object:
            raise _Forbidden(f"a unit test may not open {what}: mark the test (or its module) "
                             "with @pytest.mark.database or @pytest.mark.process")
        return _refuse

    real_init = socket.socket.__init__

    def network_socket(sock: socket.socket, family: int = socket.AF_INET,
                       *args: object, **kwargs: object) -> None:
        # An event loop's own AF_UNIX socketpair is fine; the network is not.
        if family in (socket.AF_INET, socket.AF_INET6):
            refuse("a network socket")()
        real_init(sock, family, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "__init__", network_socket)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("a subprocess"))
    # Each name a driver may be reached by (SQLAlchemy takes sqlite3.dbapi2; libpq opens its
    # sockets in C, out of the socket guard's sight).
    for module in (sqlite3, sqlite3.dbapi2):
        monkeypatch.setattr(module, "connect", refuse("a SQLite database"))
    for target in (psycopg, psycopg.Connection, psycopg2):
        monkeypatch.setattr(target, "connect", refuse("a PostgreSQL connection"))


# ---- order -----------------------------------------------------------------------------------
# Longest first, from the durations a whole run recorded (`--record-durations`): run at the
# start, long tests overlap with the many short ones on the other workers instead of leaving
# one worker alone with a long test at the end. A test with no record yet goes first, since it
# may be long. Only the order depends on the file.
DURATIONS = Path(__file__).with_name("durations.json")


def pytest_configure(config: pytest.Config) -> None:
    # Many tests stop a command with Ctrl-C (SIGINT) as an operator would. A shell starts a
    # background job with SIGINT ignored, and a child inherits that: started that way, the
    # suite's commands would not stop. Handled here, it is reset to the default in children.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-durations", action="store_true",
                     help=f"write each test's duration to {DURATIONS.name} (orders later runs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(layer_of(item))
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    items.sort(key=lambda item: -known.get(item.nodeid, float("inf")))  # stable


_recorded: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _recorded[report.nodeid] = _recorded.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not config.getoption("--record-durations") or hasattr(config, "workerinput"):
        return  # only the controller holds every worker's reports
    DURATIONS.write_text(json.dumps({k: round(v, 2) for k, v in sorted(_recorded.items())},
                                    indent=0) + "\n")
