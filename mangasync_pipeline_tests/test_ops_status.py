"""`mangasync status`: what an operator sees about syncs, backlog and MangaDex, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, insert

from mangasync_pipeline.cli import cli
from mangasync_pipeline.db import tables as t


def run_status(db_url: str, *args: str) -> Result:
    """The real command, in-process (a subprocess per call costs seconds of imports)."""
    return CliRunner().invoke(cli, ["status", *args], env={"DATABASE_URL": db_url})


def run_status_process(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """As an operator runs it, to see exactly what reaches the terminal."""
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "mangasync_pipeline.cli", "status", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )


def seed(engine: Engine) -> datetime:
    """Rows as of now (ages are relative to the moment the test runs); returns that now."""
    NOW = datetime.now(UTC)  # noqa: N806 - reads as the constant it is within one test
    with engine.begin() as conn:
        conn.execute(insert(t.sync_state).values(
            sync_type="initial_sync", status="completed", last_run_at=NOW,
            last_success_at=NOW - timedelta(minutes=1), last_cursor="2024-05-01T10:00:00",
            updated_at=NOW))
        conn.execute(insert(t.sync_state).values(
            sync_type="chapter_check", status="error", last_run_at=NOW,
            error_message="MangaDex unreachable: circuit open until 12:05", updated_at=NOW))
        manga_ids = []
        for i in range(3):
            result = conn.execute(insert(t.manga).values(
                mangadex_id=f"00000000-0000-0000-0000-00000000000{i}", slug=f"m-{i}",
                title=f"Manga {i}", created_at=NOW, catalogued_at=NOW, updated_at=NOW))
            manga_ids.append(result.inserted_primary_key[0])
        conn.execute(insert(t.chapters), [
            {"manga_id": manga_ids[0], "mangadex_chapter_id": f"c-{i}", "chapter_number": i,
             "translated_language": "en", "notified": False, "created_at": NOW, "updated_at": NOW}
            for i in range(5)
        ])
        user_id = conn.execute(insert(t.users).values(
            username="reader", token_version=1, created_at=NOW)).inserted_primary_key[0]
        conn.execute(insert(t.notifications), [
            {"user_id": user_id, "type": "NEW_CHAPTER", "manga_id": manga_ids[0], "chapter": "4",
             "title": "Manga 0", "read": read, "created_at": NOW}
            for read in (True, False, False)
        ])
        conn.execute(insert(t.notification_outbox), [
            {"dedup_key": f"k{i}", "kind": "new-chapter", "payload": {}, "status": status,
             "attempts": 2, "next_attempt_at": NOW, "created_at": NOW - timedelta(minutes=age),
             "last_error": "connection refused" if status == "pending" else None}
            for i, (status, age) in enumerate([("delivered", 90), ("pending", 30), ("pending", 5)])
        ])
        conn.execute(insert(t.mangadex_circuit).values(
            name="mangadex", state="open", consecutive_failures=10,
            opened_until=NOW + timedelta(minutes=5), last_error="ConnectError: no route to host",
            updated_at=NOW))
    return NOW


def test_json_reports_syncs_backlog_counts_and_breaker(db_url: str, engine: Engine) -> None:
    NOW = seed(engine)  # noqa: N806
    result = run_status(db_url, "--json")
    assert result.exit_code == 1, result.output  # unhealthy, for monitoring scripts
    report = json.loads(result.stdout)

    syncs = {s["sync_type"]: s for s in report["syncs"]}
    assert list(syncs) == ["initial_sync", "new_manga_poll", "chapter_check"]
    assert syncs["initial_sync"]["status"] == "completed"
    assert syncs["initial_sync"]["last_cursor"] == "2024-05-01T10:00:00"
    assert datetime.fromisoformat(syncs["initial_sync"]["last_success_at"]) == (
        NOW - timedelta(minutes=1))
    assert syncs["new_manga_poll"]["status"] == "never run"
    assert "circuit open" in syncs["chapter_check"]["error_message"]

    assert report["outbox_pending"] == 2
    assert 29 * 60 <= report["outbox_oldest_age_seconds"] <= 32 * 60
    assert report["outbox_oldest_error"] == "connection refused"
    assert (report["manga"], report["chapters"], report["users"]) == (3, 5, 1)
    assert (report["notifications"], report["notifications_unread"]) == (3, 2)
    assert report["breakers"][0]["state"] == "open"
    assert report["healthy"] is False
    assert any("chapter_check failed" in p for p in report["problems"])
    assert any("breaker" in p for p in report["problems"])
    assert any("pending delivery" in p for p in report["problems"])


def test_table_shows_the_same_facts(db_url: str, engine: Engine) -> None:
    seed(engine)
    result = run_status(db_url)
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "initial_sync" in out and "completed" in out and "2024-05-01T10:00:00" in out
    assert "never run" in out
    assert "2 pending, oldest 30m old" in out
    assert "notifications:  3 (2 unread)" in out
    assert "breaker mangadex open" in out
    assert "problem: chapter_check failed: MangaDex unreachable" in out


def test_empty_database_is_healthy(db_url: str) -> None:
    result = run_status(db_url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["healthy"] is True
    assert report["outbox_pending"] == 0 and report["outbox_oldest_age_seconds"] is None
    assert "healthy: no problems found" in run_status(db_url).stdout


@pytest.mark.process
def test_unmigrated_or_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = run_status_process(f"sqlite:///{tmp_path / 'nowhere' / 'hub.sqlite'}")
    assert result.returncode == 3
    assert "no MangaHub database at" in result.stderr and "mangasync migrate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists(), "status must not create the database"

    (tmp_path / "empty.sqlite").touch()  # a file, but never migrated
    result = run_status_process(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    assert result.returncode == 3
    assert "mangasync migrate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    result = run_status_process("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr
    assert run_status_process("not-a-url").returncode == 3
    assert run_status_process(f"sqlite:///{tmp_path / 'empty.sqlite'}",
                              "--no-such-option").returncode == 2  # usage


def test_exit_code_tells_a_monitoring_script_what_it_found(db_url: str, engine: Engine,
                                                          tmp_path: Path) -> None:
    """As a monitoring script runs it: 0 healthy, 1 problems (3 unknown and 2 usage are
    in the test above)."""
    assert run_status_process(db_url).returncode == 0
    with engine.begin() as conn:
        conn.execute(insert(t.sync_state).values(
            sync_type="new_manga_poll", status="error", error_message="MangaDex answered 503",
            updated_at=datetime.now(UTC)))
    unhealthy = run_status_process(db_url, "--json")
    assert unhealthy.returncode == 1, unhealthy.stderr
    assert json.loads(unhealthy.stdout)["healthy"] is False
