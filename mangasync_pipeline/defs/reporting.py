"""Turning run reports into what a person reads in the Dagster UI and in /metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableRecord,
    TableSchema,
)
from sqlalchemy import Engine, Table

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


def figures(values: Mapping[str, Any], skip: Sequence[str] = ()) -> str:
    """`manga seen 2, manga inserted 1, ...`: a run log line a person reads, not a repr."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items()
                     if k not in skip and isinstance(v, int | float | str) and v != "")


def delivery_metadata(report: DeliveryReport) -> dict[str, Any]:
    return {f"outbox_{k}": v for k, v in report.as_metadata().items()}


def table(rows: list[dict[str, Any]], columns: dict[str, str]) -> MetadataValue:
    """Rows as a table the UI renders with its columns (`columns`: name -> type)."""
    schema = TableSchema(columns=[TableColumn(name, kind) for name, kind in columns.items()])
    return MetadataValue.table(
        records=[TableRecord({k: row.get(k) for k in columns}) for row in rows], schema=schema)


def preview(lines: list[str], limit: int = 10, column: str = "item") -> MetadataValue:
    """The first `limit` lines as a one-column table; a last row says how many more."""
    shown = [{column: line} for line in lines[:limit]]
    if len(lines) > limit:
        shown.append({column: f"… and {len(lines) - limit} more"})
    return table(shown, {column: "string"})


def manga_preview(changes: Sequence[tuple[int, str, str, str]],
                  limit: int = 10) -> MetadataValue:
    """The manga a run inserted or changed (`CatalogueReport.changes`), as a table."""
    rows = [{"manga_id": i, "mangadex_id": dex, "title": title, "change": change}
            for i, dex, title, change in changes[:limit]]
    return table(rows, {"manga_id": "int", "mangadex_id": "string", "title": "string",
                        "change": "string"})


def run_scope(partition_keys: list[str], metadata: dict[str, Any]) -> dict[str, Any]:
    """Figures of a whole run: as they are for one partition, labelled `range_` otherwise
    (the UI shows them on every partition of the range, beside that partition's own)."""
    if len(partition_keys) <= 1:
        return metadata
    return {"range": f"{partition_keys[0]} .. {partition_keys[-1]} "
                     f"({len(partition_keys)} partitions)",
            **{f"range_{k}": v for k, v in metadata.items()}}


def table_metadata(table_def: Table) -> dict[str, Any]:
    """`dagster/table_name` and `dagster/column_schema` of a MangaHub table."""
    columns = []
    for column in table_def.columns:
        refs = ", ".join(sorted(f"{fk.column.table.name}.{fk.column.name}"
                                for fk in column.foreign_keys))
        columns.append(TableColumn(
            column.name, str(column.type).lower(),
            description=f"references {refs}" if refs else None,
            constraints=TableColumnConstraints(nullable=bool(column.nullable),
                                               unique=bool(column.unique or column.primary_key))))
    return {"dagster/table_name": table_def.name,
            "dagster/column_schema": TableSchema(columns=columns)}


# The seed's sync metrics (exported with the `mangasync_` prefix by the notification server):
# counters end in `_total`; the duration is a histogram with these upper bounds in seconds.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


def histogram_values(name: str, labels: dict[str, str], seconds: float
                     ) -> dict[tuple[str, str], float]:
    """One observation as additions to a Prometheus histogram's cumulative rows."""
    values = {(f"{name}_bucket", metrics.labels_text({**labels, "le": repr(bound)})):
              float(seconds <= bound) for bound in DURATION_BUCKETS}
    values[(f"{name}_bucket", metrics.labels_text({**labels, "le": "+Inf"}))] = 1.0
    values[(f"{name}_sum", metrics.labels_text(labels))] = seconds
    values[(f"{name}_count", metrics.labels_text(labels))] = 1.0
    return values


def record_metrics(engine: Engine, sync: str, spent: StatsSnapshot, duration: float,
                   counts: dict[str, int]) -> None:
    kind = {"type": sync}
    values: dict[tuple[str, str], float] = {}
    for (endpoint, status), n in spent.requests.items():
        key = ("mangadex_api_requests_total", metrics.labels_text(
            {"endpoint": endpoint, "status_code": status}))
        values[key] = values.get(key, 0) + n
    values[("mangadex_rate_limit_wait_seconds_total", "")] = spent.rate_limit_wait_s
    values.update(histogram_values("mangadex_sync_duration_seconds", kind, duration))
    values[("mangadex_sync_runs_total", metrics.labels_text(kind))] = 1
    for name, n in counts.items():  # manga_synced, chapters_synced
        values[(f"mangadex_{name}_total", metrics.labels_text(kind))] = n
    with engine.begin() as conn:
        metrics.add(conn, values)


def record_errors(engine: Engine, sync: str, error_codes: list[str]) -> None:
    """`mangadex_sync_errors_total{type, error_code}`, one per failed step (or run)."""
    values: dict[tuple[str, str], float] = {}
    for code in error_codes:
        key = ("mangadex_sync_errors_total",
               metrics.labels_text({"type": sync, "error_code": code}))
        values[key] = values.get(key, 0) + 1
    with engine.begin() as conn:
        metrics.add(conn, values)
