"""The trigger token guards every route but /health; /metrics may have its own token; a server
on a public address without a token does not start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import Engine

from mangasync_pipeline.config import ConfigError
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.testing import add_manga, fast_options, server_settings
from mangasync_pipeline_tests import web

GUARDED = [
    ("POST", "/notify/new-manga"), ("POST", "/notify/new-chapter"),
    ("POST", "/notify/manga-update"), ("POST", "/notify/batch"),
    ("POST", "/api/manga/1/sync"), ("GET", "/api/sync-requests/1"),
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/metrics"), ("GET", "/no-such-path"),
]


def test_every_route_but_health_needs_the_token(db_url: str, engine: Engine) -> None:
    manga_id = add_manga(engine)
    settings = server_settings(db_url, notify_trigger_token="s3cret")
    with ServerHandle(settings, fast_options()) as server:
        for method, path in GUARDED:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
                r = web.request(method, f"{server.http_url}{path}", headers=headers,
                                  json={"manga_id": manga_id, "title": "T"})
                assert r.status_code == 401, (method, path, headers)
                assert r.json() == {"error": "missing or wrong Authorization: Bearer token"}
        assert web.get(f"{server.http_url}/health").status_code == 200
        good = {"Authorization": "Bearer s3cret"}
        assert web.post(f"{server.http_url}/notify/new-manga", headers=good,
                          json={"manga_id": manga_id, "title": "T"}).status_code == 202
        assert web.post(f"{server.http_url}/api/manga/{manga_id}/sync",
                          headers=good).status_code == 202
        assert web.get(f"{server.http_url}/metrics", headers=good).status_code == 200


def test_metrics_can_have_a_token_of_its_own(db_url: str) -> None:
    settings = server_settings(db_url, notify_trigger_token="trigger",
                               notify_metrics_token="scrape")
    with ServerHandle(settings, fast_options()) as server:
        url = f"{server.http_url}/metrics"
        assert web.get(url, headers={"Authorization": "Bearer scrape"}).status_code == 200
        assert web.get(url, headers={"Authorization": "Bearer trigger"}).status_code == 401
        # The scraper's token triggers nothing.
        assert web.post(f"{server.http_url}/notify/new-manga",
                          headers={"Authorization": "Bearer scrape"},
                          json={"manga_id": 1, "title": "T"}).status_code == 401


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.0.2.10"])
def test_a_public_bind_without_a_token_refuses_to_start(db_url: str, bind: str) -> None:
    with pytest.raises(ConfigError) as refused:
        ServerHandle(server_settings(db_url, bind=bind), fast_options()).start()
    assert str(refused.value).startswith(f"MANGASYNC_BIND={bind!r} is not a loopback address")
    assert "NOTIFY_TRIGGER_TOKEN" in str(refused.value) and "\n" not in str(refused.value)


def test_a_public_bind_with_a_token_starts(db_url: str) -> None:
    settings = server_settings(db_url, bind="0.0.0.0", notify_trigger_token="s3cret")
    with ServerHandle(settings, fast_options()) as server:
        assert web.get(f"http://127.0.0.1:{server.server.http_port}/health").status_code == 200


def test_the_server_command_says_in_one_line_why_it_refuses_a_public_bind(db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": db_url, "MANGASYNC_BIND": "0.0.0.0",
           "MANGASYNC_HTTP_PORT": "1", "MANGASYNC_UDP_PORT": "1"}  # never bound: refused first
    env.pop("NOTIFY_TRIGGER_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "mangasync_pipeline.cli", "server"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "NOTIFY_TRIGGER_TOKEN" in lines[0], proc.stderr
