"""`sync_state`: one row per kind of sync, read by `mangasync status` and `/health`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.queries import insert_ignore
from mangasync_pipeline.db.tables import sync_state

INITIAL_SYNC = "initial_sync"
NEW_MANGA_POLL = "new_manga_poll"
CHAPTER_CHECK = "chapter_check"


def get_state(conn: Connection, sync_type: str) -> dict[str, Any] | None:
    row = conn.execute(select(sync_state).where(sync_state.c.sync_type == sync_type)).first()
    return dict(row._mapping) if row else None


def set_state(conn: Connection, sync_type: str, *, now: datetime | None = None,
              **values: Any) -> None:
    """Update the row (creating it first), touching only the columns given."""
    now = now or utcnow()
    insert_ignore(conn, sync_state, [{"sync_type": sync_type, "status": "idle",
                                      "updated_at": now}], conflict=["sync_type"])
    conn.execute(update(sync_state).where(sync_state.c.sync_type == sync_type)
                 .values(updated_at=now, **values))


def mark_running(engine: Engine, sync_type: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        set_state(conn, sync_type, now=now, status="running", last_run_at=now,
                  error_message=None)


def mark_error(engine: Engine, sync_type: str, message: str) -> None:
    with engine.begin() as conn:
        set_state(conn, sync_type, status="error", error_message=message[:2000])


def mark_success(conn: Connection, sync_type: str, *, cursor: str | None = None,
                 metadata: dict[str, Any] | None = None, status: str = "completed") -> None:
    now = utcnow()
    values: dict[str, Any] = {"status": status, "last_success_at": now, "error_message": None}
    if cursor is not None:
        values["last_cursor"] = cursor
    if metadata is not None:
        values["metadata"] = metadata
    set_state(conn, sync_type, now=now, **values)
