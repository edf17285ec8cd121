"""The Prometheus alert rules an operator deploys: valid, and each alert fires when it should
and not before (`promtool test rules`, Debian's `prometheus` package; scripts/test.sh installs
it as root). The gauges they watch come from a real server's /metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline_tests import web

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
pytestmark = pytest.mark.process


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (scripts/test.sh does, as root)"
    return subprocess.run([tool, *args], cwd=RULES, capture_output=True, text=True, timeout=60)


def test_the_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_series_the_rules_watch_is_served_by_metrics(
        server: ServerHandle, engine: Engine) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(t.mangadex_circuit).values(
            name="mangadex", state="open", opened_until=now + timedelta(minutes=5),
            updated_at=now))
        conn.execute(insert(t.notification_outbox).values(
            dedup_key="k", kind="new-manga", payload={}, status="pending", attempts=1,
            next_attempt_at=now, created_at=now - timedelta(minutes=20)))
        conn.execute(insert(t.sync_state).values(
            sync_type="chapter_check", status="idle", last_success_at=now - timedelta(hours=1),
            updated_at=now))
    text = web.get(f"{server.http_url}/metrics").text
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["mangasync_mangadex_breaker_open"].value == 1.0
    assert samples["mangasync_outbox_pending"].value == 1.0
    assert 1190 < samples["mangasync_outbox_oldest_pending_age_seconds"].value < 1300
    stale = now.timestamp() - samples["mangasync_sync_last_success_timestamp_seconds"].value
    assert 3590 < stale < 3700
    watched = set(re.findall(r"\bmangasync_[a-z_]+", (RULES / "alerts.yml").read_text()))
    unserved = watched - set(samples) - {
        "mangasync_mangadex_sync_errors_total",  # written by the failure sensor: test_operations
        "mangasync_quarantined_records",  # written by sync runs' quarantine
    }
    assert unserved == set(), f"rules watch series /metrics does not serve: {unserved}"
