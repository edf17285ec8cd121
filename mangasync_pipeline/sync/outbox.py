"""The pipeline's outbox: notifications stored with the rows that caused them.

`enqueue` runs inside the caller's transaction, so a notification exists if and only if its
data was committed. Delivery happens after the commit (`notifier.py`), in id order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from mangasync_pipeline.db.queries import insert_ignore
from mangasync_pipeline.db.tables import notification_outbox

NEW_MANGA = "new-manga"
NEW_CHAPTER = "new-chapter"
MANGA_UPDATE = "manga-update"
KINDS = (NEW_MANGA, NEW_CHAPTER, MANGA_UPDATE)

PENDING = "pending"
DELIVERED = "delivered"
REJECTED = "rejected"  # the server refused it for good (unknown manga, invalid): kept for review

MAX_BACKOFF = timedelta(minutes=10)


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    kind: str
    payload: dict[str, Any]
    dedup_key: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime


def enqueue(conn: Connection, kind: str, payload: dict[str, Any], dedup_key: str,
            now: datetime) -> None:
    """Queue a notification; the same `dedup_key` twice is queued once."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    insert_ignore(conn, notification_outbox, [{
        "dedup_key": dedup_key[:200], "kind": kind, "payload": payload, "status": PENDING,
        "attempts": 0, "next_attempt_at": now, "created_at": now,
    }], conflict=["dedup_key"])


def pending(conn: Connection, limit: int, after_id: int = 0) -> list[OutboxEntry]:
    rows = conn.execute(
        select(notification_outbox).where(notification_outbox.c.status == PENDING,
                                          notification_outbox.c.id > after_id)
        .order_by(notification_outbox.c.id).limit(limit)
    ).all()
    return [OutboxEntry(id=r.id, kind=r.kind, payload=r.payload, dedup_key=r.dedup_key,
                        attempts=r.attempts, next_attempt_at=r.next_attempt_at,
                        created_at=r.created_at) for r in rows]


def mark_settled(conn: Connection, verdicts: list[tuple[int, str]], now: datetime) -> None:
    """Settle (entry id, verdict) pairs at once: "" delivered, else rejected for that reason."""
    t = notification_outbox
    delivered = [{"eid": i} for i, v in verdicts if v == ""]
    rejected = [{"eid": i, "err": v[:1000]} for i, v in verdicts if v != ""]
    if delivered:
        conn.execute(update(t).where(t.c.id == bindparam("eid"))
                     .values(status=DELIVERED, delivered_at=now, last_error=None), delivered)
    if rejected:
        conn.execute(update(t).where(t.c.id == bindparam("eid"))
                     .values(status=REJECTED, last_error=bindparam("err")), rejected)


def mark_failed(conn: Connection, entry: OutboxEntry, error: str, now: datetime) -> datetime:
    """Keep it pending and push its next attempt back (exponential, with jitter)."""
    attempts = entry.attempts + 1
    delay = min(timedelta(seconds=5 * 2 ** min(attempts - 1, 10)), MAX_BACKOFF)
    retry_at = now + delay * random.uniform(0.8, 1.2)
    conn.execute(update(notification_outbox).where(notification_outbox.c.id == entry.id)
                 .values(attempts=attempts, next_attempt_at=retry_at, last_error=error[:1000]))
    return retry_at


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_created_at: datetime | None
    next_attempt_at: datetime | None

    def oldest_age_seconds(self, now: datetime) -> float:
        return (now - self.oldest_created_at).total_seconds() if self.oldest_created_at else 0.0


def backlog(conn: Connection) -> Backlog:
    t = notification_outbox
    count, oldest = conn.execute(
        select(func.count(), func.min(t.c.created_at)).where(t.c.status == PENDING)).one()
    head = conn.execute(select(t.c.next_attempt_at).where(t.c.status == PENDING)
                        .order_by(t.c.id).limit(1)).scalar()
    return Backlog(pending=count, oldest_created_at=oldest, next_attempt_at=head)


@dataclass(frozen=True)
class Refused:
    dedup_key: str
    last_error: str | None


def refused_count(conn: Connection) -> int:
    t = notification_outbox
    return int(conn.execute(select(func.count()).where(t.c.status == REJECTED)).scalar() or 0)


def refused(conn: Connection, limit: int) -> list[Refused]:
    """The latest entries the server refused for good, newest first."""
    t = notification_outbox
    return [Refused(r.dedup_key, r.last_error) for r in conn.execute(
        select(t.c.dedup_key, t.c.last_error).where(t.c.status == REJECTED)
        .order_by(t.c.id.desc()).limit(limit))]
