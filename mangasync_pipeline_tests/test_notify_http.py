"""HTTP triggers, health and metrics of a live server; triggers fuzzed from its OpenAPI document."""

from __future__ import annotations

import json
from datetime import timedelta

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from sqlalchemy import Engine, func, insert, select

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.testing import (
    add_manga,
    add_users,
    fast_options,
    follow,
    server_settings,
)
from mangasync_pipeline_tests import web


def _count(engine: Engine, table: t.Table) -> int:  # type: ignore[name-defined]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.mark.parametrize("body, field", [
    (b"{not json", "body"),
    (b"[1, 2]", "body"),
    (json.dumps({"title": "T", "chapter": 1}).encode(), "manga_id"),
    (json.dumps({"manga_id": "12", "title": "T", "chapter": 1}).encode(), "manga_id"),
    (json.dumps({"manga_id": 1, "chapter": 1}).encode(), "title"),
    (json.dumps({"manga_id": 1, "title": "x" * 501, "chapter": 1}).encode(), "title"),
    (json.dumps({"manga_id": 1, "title": "T", "chapter": "one"}).encode(), "chapter"),
    (json.dumps({"manga_id": 1, "title": "T", "chapter": [1]}).encode(), "chapter"),
    (json.dumps({"manga_id": 1, "title": "T", "chapter": True}).encode(), "chapter"),
    (json.dumps({"manga_id": 1, "title": "T"}).encode(), "chapter"),
    (json.dumps({"manga_id": 1, "title": "T", "chapter": 1,
                 "dedup_key": "k" * 201}).encode(), "dedup_key"),
])
def test_malformed_triggers_are_400_naming_the_field_and_store_nothing(
        server: ServerHandle, engine: Engine, body: bytes, field: str) -> None:
    add_manga(engine)
    r = web.post(f"{server.http_url}/notify/new-chapter", content=body,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"].startswith(field)
    assert _count(engine, t.notification_triggers) == 0


def test_unknown_manga_is_404_and_oversize_body_413(server: ServerHandle, engine: Engine) -> None:
    r = web.post(f"{server.http_url}/notify/new-manga", json={"manga_id": 999, "title": "T"})
    assert r.status_code == 404 and "999" in r.json()["error"]
    r = web.post(f"{server.http_url}/notify/new-manga",
                   json={"manga_id": 1, "title": "T", "pad": "x" * 70_000})
    assert r.status_code == 413
    assert _count(engine, t.notification_triggers) == 0


def test_bearer_token_is_required_when_configured(db_url: str, engine: Engine) -> None:
    manga_id = add_manga(engine)
    settings = server_settings(db_url, notify_trigger_token="s3cret")
    with ServerHandle(settings, fast_options()) as server:
        body = {"manga_id": manga_id, "title": "T"}
        url = f"{server.http_url}/notify/new-manga"
        assert web.post(url, json=body).status_code == 401
        assert web.post(url, json=body, headers={"Authorization": "Bearer nope"}
                          ).status_code == 401
        assert web.post(url, json=body, headers={"Authorization": "Bearer s3cret"}
                          ).status_code == 202


def test_dedup_key_answers_like_the_first_and_identical_notifications_wait_an_hour(
        server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    users = add_users(engine, 3)
    follow(engine, [u for u, _, _ in users[:2]], manga_id)
    url = f"{server.http_url}/notify/new-chapter"
    body = {"manga_id": manga_id, "title": "T", "chapter": 12, "dedup_key": "ch-12"}
    first = web.post(url, json=body)
    again = web.post(url, json=body)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert first.json()["recipients"] == 2
    # No key, same chapter written differently: still the same notification within the hour.
    third = web.post(url, json={"manga_id": manga_id, "title": "T", "chapter": "12.0"})
    assert third.json()["recipients"] == 0
    assert _count(engine, t.notifications) == 2
    with engine.begin() as conn:
        conn.execute(t.notifications.update().values(created_at=utcnow() - timedelta(hours=2)))
    assert web.post(url, json={"manga_id": manga_id, "title": "T", "chapter": 12}
                      ).json()["recipients"] == 2


def test_big_broadcast_is_summarised_but_counts_are_exact(
        server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    add_users(engine, 1500)
    r = web.post(f"{server.http_url}/notify/new-manga", json={"manga_id": manga_id,
                                                               "title": "For everyone"})
    body = r.json()
    assert r.status_code == 202
    assert body["recipients"] == 1500 and body["online"] == 0
    assert len(body["notification_ids"]) == 100
    assert body["notification_ids_summary"]["count"] == 1500
    assert _count(engine, t.notifications) == 1500


def test_health_reports_syncs_breaker_and_sessions(server: ServerHandle, engine: Engine) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(t.sync_state).values(sync_type="chapter_check", status="error",
                                                 error_message="HTTP 503", last_run_at=now,
                                                 updated_at=now))
        # Open for five more minutes: past opened_until, /health shows "half_open (probe due)".
        conn.execute(insert(t.mangadex_circuit).values(
            name="mangadex", state="open", opened_until=now + timedelta(minutes=5),
            updated_at=now))
    body = web.get(f"{server.http_url}/health").json()
    assert body["status"] == "degraded"
    assert body["database"] == "ok"
    assert body["mangadex"]["breaker"] == "open"
    assert body["syncs"]["chapter_check"]["error_message"] == "HTTP 503"
    assert body["udp"] == {"sessions": 0, "users_online": 0}


def test_metrics_include_sync_metrics_rows_from_other_processes(
        server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    add_users(engine, 2)
    with engine.begin() as conn:
        conn.execute(insert(t.sync_metrics), [
            {"name": "mangadex_requests_total", "labels": "endpoint=manga,status=200",
             "value": 7, "updated_at": utcnow()},
            {"name": "chapters_synced_total", "labels": "", "value": 3, "updated_at": utcnow()},
        ])
    web.post(f"{server.http_url}/notify/new-manga", json={"manga_id": manga_id, "title": "T"})
    text = web.get(f"{server.http_url}/metrics").text
    assert 'mangasync_mangadex_requests_total{endpoint="manga",status="200"} 7.0' in text
    assert "mangasync_chapters_synced_total 3.0" in text
    assert "mangasync_notifications_pending 2.0" in text
    assert 'mangasync_notify_triggers_total{status="202",type="NEW_MANGA"} 1.0' in text
    assert "mangasync_udp_sessions 0.0" in text


def test_triggers_fuzzed_from_the_openapi_document_never_answer_500(
        server: ServerHandle, engine: Engine) -> None:
    add_manga(engine)
    schema = schemathesis.openapi.from_url(f"{server.http_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    triggers = [op for op in operations if op.path.startswith("/notify/")]
    assert len(triggers) == 4
    failures: list[str] = []
    for operation in triggers:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @hypothesis.settings(max_examples=40, deadline=None, database=None,
                                 suppress_health_check=list(hypothesis.HealthCheck))
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: schemathesis.Case) -> None:
                response = case.call(base_url=server.http_url)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.path} {case.body!r}: "
                                    f"{response.status_code}")
                assert response.status_code in (200, 202, 400, 404, 413)

            fuzz()
    assert failures == []


def test_manual_sync_of_an_unknown_manga_is_404(server: ServerHandle) -> None:
    r = web.post(f"{server.http_url}/api/manga/no-such-manga/sync")
    assert r.status_code == 404
    assert "no-such-manga" in r.json()["error"]
