"""A database outage: triggers answer 503 with Retry-After, /health and /metrics still answer
and say so, the log has one line when it goes and one when it is back, and the server recovers
without a restart. PostgreSQL: the database refuses connections and its sessions are ended."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import Engine

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.testing import add_manga, fast_options, server_settings
from mangasync_pipeline_tests import web
from mangasync_pipeline_tests.conftest import _pg_admin


def _cut(dbname: str, allow: bool) -> None:
    _pg_admin(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(allow).lower()}')
    if not allow:
        _pg_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()")


def test_database_outage_is_503_then_recovers_without_restart(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    engine: Engine = make_engine(pg_url)
    manga_id = add_manga(engine)
    engine.dispose()
    caplog.set_level(logging.INFO, logger="mangasync.notify")
    with ServerHandle(server_settings(pg_url), fast_options()) as server:
        trigger = f"{server.http_url}/notify/new-manga"
        assert web.post(trigger, json={"manga_id": manga_id, "title": "A"}).status_code == 202
        _cut(dbname, allow=False)
        try:
            for n in range(5):
                r = web.post(trigger, json={"manga_id": manga_id, "title": f"B{n}"})
                assert r.status_code == 503
                assert r.json()["error"].startswith("database unavailable, retry later")
                assert int(r.headers["retry-after"]) > 0
            batch = web.post(f"{server.http_url}/notify/batch", json={"triggers": [
                {"kind": "new-manga", "manga_id": manga_id, "title": "C"}]})
            assert batch.status_code == 503 and "retry-after" in batch.headers
            health = web.get(f"{server.http_url}/health")
            assert health.status_code == 200
            assert health.json()["status"] == "degraded"
            assert health.json()["database"].startswith("down: ")
            metrics = web.get(f"{server.http_url}/metrics")
            assert metrics.status_code == 200
            assert "mangasync_database_up 0.0" in metrics.text
            assert "mangasync_notify_triggers_total" in metrics.text
        finally:
            _cut(dbname, allow=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = web.post(trigger, json={"manga_id": manga_id, "title": "D"})
            if r.status_code == 202:
                break
            time.sleep(0.2)
        assert r.status_code == 202
        assert "mangasync_database_up 1.0" in web.get(f"{server.http_url}/metrics").text
        assert web.get(f"{server.http_url}/health").json()["database"] == "ok"
    lines = [r.getMessage() for r in caplog.records
             if r.name in ("mangasync.notify.database", "mangasync.notify.pubsub")]
    down = [m for m in lines if "unreachable" in m or "lost" in m]
    back = [m for m in lines if "again" in m]
    assert len([m for m in down if "unreachable" in m]) == 1, lines
    assert len([m for m in back if "database reachable again" in m]) == 1, lines
    # Without a restart and without a traceback per request.
    assert not [r for r in caplog.records if r.exc_info]
