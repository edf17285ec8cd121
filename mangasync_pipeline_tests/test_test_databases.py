"""The suite's PostgreSQL databases: each test process hands its databases out again, but only
as the template left them. A constraint one test added once refused another test's rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from mangasync_pipeline_tests.conftest import _pg_admin, _pg_connect, pg_database


@contextmanager
def _next_after(template: str, change: Callable[[psycopg.Connection, str], None]
                ) -> Iterator[tuple[bool, psycopg.Connection]]:
    """One test gets a database and changes it; the next test's database is yielded: whether
    it is the same one, and a connection to it."""
    first = pg_database(template)
    used = next(first).rsplit("/", 1)[1]
    with _pg_connect(used) as conn:
        change(conn, used)
    next(first, None)  # the first test's teardown
    second = pg_database(template)
    name = next(second).rsplit("/", 1)[1]
    with _pg_connect(name) as conn:
        yield name == used, conn
    next(second, None)


INSERT_STATE = ("INSERT INTO sync_state (sync_type, status, updated_at) "
                "VALUES ('test', 'ok', now())")


def _rows(conn: psycopg.Connection, _name: str) -> None:
    conn.execute(INSERT_STATE)
    conn.execute("CREATE TABLE scratch (n int)")


def _constraint(conn: psycopg.Connection, _name: str) -> None:
    conn.execute("ALTER TABLE chapters ADD CONSTRAINT odd_label "
                 "CHECK (label IS DISTINCT FROM '13')")


def _trigger(conn: psycopg.Connection, _name: str) -> None:
    conn.execute("CREATE TRIGGER same_rows BEFORE UPDATE ON manga "
                 "FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()")


def _disabled(conn: psycopg.Connection, _name: str) -> None:
    conn.execute("ALTER TABLE chapters DISABLE TRIGGER ALL")  # foreign keys unchecked


def _widened(conn: psycopg.Connection, _name: str) -> None:
    conn.execute("ALTER TABLE chapters ALTER COLUMN label TYPE varchar(64)")


def _shut(_conn: psycopg.Connection, name: str) -> None:
    _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')


def _setting(_conn: psycopg.Connection, name: str) -> None:
    _pg_admin(f'ALTER DATABASE "{name}" SET statement_timeout = 1')


@pytest.mark.parametrize("change", [_constraint, _trigger, _disabled, _widened, _shut, _setting],
                         ids=["constraint", "trigger", "disabled", "widened", "closed",
                              "setting"])
def test_a_database_a_test_altered_is_not_handed_out_again(
        pg_template: str, change: Callable[[psycopg.Connection, str], None]) -> None:
    with _next_after(pg_template, change) as (same, conn):
        assert not same
        # The next test's database is as the template made it: this row is accepted.
        conn.execute(INSERT_STATE)


def test_a_database_with_rows_and_a_new_table_comes_back_empty(pg_template: str) -> None:
    with _next_after(pg_template, _rows) as (same, conn):
        assert same
        assert conn.execute("SELECT count(*) FROM sync_state").fetchone() == (0,)
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert "scratch" not in tables
