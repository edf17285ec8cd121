"""Counters in the MangaHub database (`sync_metrics`), so `/metrics` of the notification
server tells the truth about sync runs that happen in other processes."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.tables import sync_metrics


def labels_text(labels: Mapping[str, object]) -> str:
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def add(conn: Connection, values: Mapping[tuple[str, str], float]) -> None:
    """Add to counters keyed by (name, labels_text); created at zero when new."""
    _upsert(conn, values, add=True)


def set_values(conn: Connection, values: Mapping[tuple[str, str], float]) -> None:
    """Set gauges keyed by (name, labels_text) to these values."""
    _upsert(conn, values, add=False)


def _upsert(conn: Connection, values: Mapping[tuple[str, str], float], *, add: bool) -> None:
    if not values:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    now = utcnow()
    stmt = dialect.insert(sync_metrics)
    merged = sync_metrics.c.value + stmt.excluded.value if add else stmt.excluded.value
    stmt = stmt.on_conflict_do_update(index_elements=["name", "labels"],
                                      set_={"value": merged, "updated_at": now})
    conn.execute(stmt, [{"name": name, "labels": labels, "value": value, "updated_at": now}
                        for (name, labels), value in values.items()])
