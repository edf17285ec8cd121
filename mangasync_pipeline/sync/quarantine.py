"""`quarantined_records`: MangaDex records the sync skipped, kept where an operator sees them.

A record that fails the boundary checks (`mangadex/models.py`), or whose storing raised, is
skipped and recorded here with the field and a one-line reason; it never fails a run nor holds
back another record. Records are read again by id once `RETRY_AFTER` has passed since they
were last seen (one request per 100), and leave the table as soon as they read clean, or when
MangaDex no longer has them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from mangasync_pipeline.db.queries import insert_ignore
from mangasync_pipeline.db.tables import quarantined_records as q
from mangasync_pipeline.mangadex.errors import MangaDexError
from mangasync_pipeline.mangadex.models import Rejection
from mangasync_pipeline.sync import metrics

log = logging.getLogger("mangasync.quarantine")
T = TypeVar("T")
MANGA, CHAPTER = "manga", "chapter"
RETRY_AFTER = timedelta(minutes=15)
RETRY_BATCH = 100  # one MangaDex request's worth of ids

# Failures of the infrastructure, not of one record: they fail the run as before (and are
# retried), while anything else raised by one record's storing quarantines that record.
INFRASTRUCTURE = (OperationalError, InterfaceError, MangaDexError, ConnectionError, TimeoutError)


def is_record_error(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, INFRASTRUCTURE)


def reason_of(exc: BaseException) -> str:
    """An exception as the one line a quarantine row shows."""
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"[:300]


def isolate(items: Sequence[T], store: Callable[[list[T]], None],
            what: str) -> list[tuple[T, BaseException]]:
    """`store(items)` at once; should a record make it raise, each record on its own. Returns
    the records that raised by themselves, with what they raised, for the quarantine;
    failures of the infrastructure are raised as they are."""
    parts = [list(items)] if items else []
    failed: list[tuple[T, BaseException]] = []
    while parts:
        part = parts.pop(0)
        try:
            store(part)
        except Exception as exc:
            if not is_record_error(exc):
                raise
            if len(part) == 1:
                failed.append((part[0], exc))
                continue
            log.warning("%d %s failed to store together (%s); storing them one by one",
                        len(part), what, reason_of(exc))
            parts = [[item] for item in part] + parts
    return failed


@dataclass(frozen=True)
class Quarantined:
    source: str
    mangadex_id: str
    parent_id: str | None
    field: str
    reason: str
    first_seen: datetime
    last_seen: datetime


def record(conn: Connection, rejections: Sequence[Rejection], now: datetime) -> int:
    """Insert or refresh (last seen, field, reason) each rejection; returns how many records
    were not quarantined before."""
    latest = {(r.source, r.mangadex_id): r for r in rejections}
    if not latest:
        return 0
    by_source: dict[str, list[str]] = {}
    for source, dex in latest:
        by_source.setdefault(source, []).append(dex)
    known: set[tuple[str, str]] = set()
    for source, ids in by_source.items():
        known.update((source, i) for i in conn.execute(
            select(q.c.mangadex_id).where(q.c.source == source, q.c.mangadex_id.in_(ids)))
            .scalars())
    fresh = [r for key, r in latest.items() if key not in known]
    insert_ignore(conn, q, [{"source": r.source, "mangadex_id": r.mangadex_id,
                             "parent_id": r.parent_id, "field": r.field[:64],
                             "reason": r.reason, "first_seen": now, "last_seen": now}
                            for r in fresh], conflict=["source", "mangadex_id"])
    again = [{"b_source": r.source, "b_id": r.mangadex_id, "field": r.field[:64],
              "reason": r.reason} for key, r in latest.items() if key in known]
    if again:
        conn.execute(update(q).where(q.c.source == bindparam("b_source"),
                                     q.c.mangadex_id == bindparam("b_id"))
                     .values(field=bindparam("field"), reason=bindparam("reason"),
                             last_seen=now), again)
    _publish(conn)
    return len(fresh)


def release(conn: Connection, source: str, mangadex_ids: Iterable[str]) -> int:
    """Forget the records of `mangadex_ids` (read clean, or gone from MangaDex)."""
    ids = sorted(set(mangadex_ids))
    if not ids:
        return 0
    gone = conn.execute(delete(q).where(q.c.source == source, q.c.mangadex_id.in_(ids)))
    if gone.rowcount:
        _publish(conn)
    return gone.rowcount or 0


def touch(conn: Connection, source: str, mangadex_ids: Iterable[str], now: datetime) -> None:
    """Count a read as an attempt, so the record waits RETRY_AFTER before the next one."""
    ids = sorted(set(mangadex_ids))
    if ids:
        conn.execute(update(q).where(q.c.source == source, q.c.mangadex_id.in_(ids))
                     .values(last_seen=now))


def due(conn: Connection, source: str, now: datetime,
        limit: int = RETRY_BATCH) -> list[str]:
    """Records of `source` last seen RETRY_AFTER ago or more, longest waiting first."""
    return list(conn.execute(
        select(q.c.mangadex_id).where(q.c.source == source,
                                      q.c.last_seen <= now - RETRY_AFTER)
        .order_by(q.c.last_seen, q.c.id).limit(limit)).scalars())


def counts(conn: Connection) -> dict[str, int]:
    return {source: n for source, n in conn.execute(
        select(q.c.source, func.count()).group_by(q.c.source))}


def listing(conn: Connection, limit: int = 20) -> list[Quarantined]:
    """The most recently seen records, for the asset check and `mangasync status`."""
    rows = conn.execute(select(q).order_by(q.c.last_seen.desc(), q.c.id.desc())
                        .limit(limit)).all()
    return [Quarantined(r.source, r.mangadex_id, r.parent_id, r.field, r.reason,
                        r.first_seen, r.last_seen) for r in rows]


def _publish(conn: Connection) -> None:
    """The current count per source into `sync_metrics`, which the notification server's
    /metrics shows as `mangasync_quarantined_records{source=...}`."""
    found = counts(conn)
    metrics.set_values(conn, {("quarantined_records", metrics.labels_text({"source": s})):
                              found.get(s, 0) for s in (MANGA, CHAPTER)})
