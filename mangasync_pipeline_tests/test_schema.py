"""The MangaHub schema: migrations match the tables, and programs refuse a wrong schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import SchemaError, check_schema, upgrade
from mangasync_pipeline.db.tables import metadata

CONTRACT_COLUMNS = {
    "manga": {"id", "mangadex_id", "slug", "title", "author", "status", "total_chapters",
              "description", "cover_url", "created_at", "last_synced_at",
              "last_chapter_check", "updated_at"},
    "genres": {"id", "name"},
    "manga_genres": {"manga_id", "genre_id"},
    "chapters": {"id", "manga_id", "mangadex_chapter_id", "chapter_number", "title", "volume",
                 "pages", "translated_language", "published_at", "created_at", "updated_at"},
    "sync_state": {"sync_type", "last_run_at", "last_success_at", "last_cursor", "status",
                   "error_message", "metadata", "updated_at"},
    "users": {"id", "username"},
    "user_library": {"user_id", "manga_id"},
    "notifications": {"id", "user_id", "type", "manga_id", "chapter", "title", "message",
                      "read", "created_at", "delivered_at"},
}


def test_migrations_create_every_contract_table_and_column(engine: Engine) -> None:
    inspector = inspect(engine)
    for table, columns in CONTRACT_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        assert columns <= present, f"{table} lacks {columns - present}"


def test_migrations_match_the_table_definitions(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_migrate_is_idempotent_and_keeps_data(db_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO genres (name) VALUES ('Action')"))
    before, after = upgrade(db_url)
    assert before == after
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM genres")).scalars().all() == ["Action"]
    check_schema(engine)


@pytest.mark.database
def test_unmigrated_database_is_refused_in_one_line(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(SchemaError, match="run `mangasync migrate`"):
        check_schema(eng)


def test_newer_schema_is_refused_by_migrate_and_by_the_check(db_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="newer than this mangasync knows"):
        check_schema(engine)
    with pytest.raises(SchemaError, match="newer than this mangasync knows"):
        upgrade(db_url)


@pytest.mark.process
def test_migrate_command_reports_newer_schema_without_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    eng = make_engine(url)
    with eng.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'abc123'"))
    eng.dispose()
    proc = subprocess.run(
        [sys.executable, "-m", "mangasync_pipeline.cli", "migrate"],
        env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "newer than this mangasync knows" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.process
def test_bad_setting_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mangasync_pipeline.cli", "migrate"],
        env={"MANGADEX_RATE_LIMIT": "-3", "PATH": "/usr/bin:/bin"}, capture_output=True,
        text=True, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "MANGADEX_RATE_LIMIT='-3'" in proc.stderr
    assert "Traceback" not in proc.stderr
