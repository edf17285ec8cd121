"""Turning run reports into what a person reads in the Dagster UI and in /metrics."""

from __future__ import annotations

import time
from typing import Any

from dagster import MetadataValue
from sqlalchemy import Engine

from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.mangadex.stats import StatsSnapshot
from mangasync_pipeline.sync import metrics
from mangasync_pipeline.sync.notifier import DeliveryReport


class RunMeter:
    """What one run spends on MangaDex: metadata for the UI, counters for /metrics."""

    def __init__(self, engine: Engine, client: MangaDexClient, sync: str) -> None:
        self.engine, self.client, self.sync = engine, client, sync
        self.before = client.stats.snapshot()
        self.started = time.monotonic()

    def finish(self, counts: dict[str, int]) -> dict[str, Any]:
        spent = self.client.stats.snapshot() - self.before
        record_metrics(self.engine, self.sync, spent, time.monotonic() - self.started, counts)
        return {
            "mangadex_requests": spent.total_requests,
            "mangadex_requests_by_endpoint": MetadataValue.json(spent.by_endpoint()),
            "mangadex_retries": spent.retries,
            "rate_limit_wait_seconds": round(spent.rate_limit_wait_s, 2),
            "retry_wait_seconds": round(spent.retry_wait_s, 2),
        }


def delivery_metadata(report: DeliveryReport) -> dict[str, Any]:
    return {f"outbox_{k}": v for k, v in report.as_metadata().items()}


def preview(lines: list[str], limit: int = 10) -> MetadataValue:
    if not lines:
        return MetadataValue.md("_nothing new_")
    shown = "\n".join(f"- {line}" for line in lines[:limit])
    more = f"\n- … and {len(lines) - limit} more" if len(lines) > limit else ""
    return MetadataValue.md(shown + more)


def record_metrics(engine: Engine, sync: str, spent: StatsSnapshot, duration: float,
                   counts: dict[str, int]) -> None:
    values: dict[tuple[str, str], float] = {}
    for (endpoint, status), n in spent.requests.items():
        key = ("mangadex_requests_total", metrics.labels_text(
            {"endpoint": endpoint, "status": status}))
        values[key] = values.get(key, 0) + n
    values[("mangadex_rate_limit_wait_seconds_total", "")] = spent.rate_limit_wait_s
    values[("sync_duration_seconds_total", metrics.labels_text({"sync": sync}))] = duration
    values[("sync_runs_total", metrics.labels_text({"sync": sync}))] = 1
    for name, n in counts.items():
        values[(f"{name}_total", metrics.labels_text({"sync": sync}))] = n
    with engine.begin() as conn:
        metrics.add(conn, values)
