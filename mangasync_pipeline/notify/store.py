"""Database work of the notification server: blocking SQLAlchemy calls, run in a thread.

Every method here is synchronous and short; the server calls them through an executor so the
event loop never waits on the database.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db import tables as t

# Above this many, a trigger's answer lists only the first ids and summarises the rest.
MAX_LISTED_IDS = 100
SUPPRESS_WINDOW = timedelta(hours=1)
NOTIFY_CHANNEL = "mangasync_notify"
_CHUNK = 2000


class UnknownManga(LookupError):
    pass


@dataclass(frozen=True)
class Notice:
    """One stored notification, as the server pushes it."""

    id: int
    user_id: int
    type: str
    manga_id: int
    title: str
    chapter: str | None
    message: str | None
    created_at: datetime
    label: str | None = None  # MangaDex's chapter label as text ("12a"), NEW_CHAPTER only

    def shared_fields(self) -> tuple[Any, ...]:
        """What a broadcast's notifications have in common (all but id and user)."""
        return (self.type, self.manga_id, self.title, self.chapter, self.label, self.message,
                self.created_at)

    def to_message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": self.type, "id": self.id, "manga_id": self.manga_id,
                               "title": self.title}
        if self.type == "NEW_CHAPTER":
            msg["chapter"] = self.chapter
            msg["label"] = self.label
        msg["message"] = self.message or ""
        msg["created_at"] = self.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return msg


@dataclass(frozen=True)
class TriggerOutcome:
    trigger_id: int
    response: dict[str, Any]
    replayed: bool  # an earlier trigger with the same dedup_key already answered
    notices: list[Notice]  # for users online here; empty when replayed


_NOTICE_COLS = (t.notifications.c.id, t.notifications.c.user_id, t.notifications.c.type,
                t.notifications.c.manga_id, t.notifications.c.title, t.notifications.c.chapter,
                t.notifications.c.message, t.notifications.c.created_at,
                # The chapter label column comes with the labelled-chapters schema change.
                *(c for c in t.notifications.c if c.name == "label"))


def _notice(row: Any) -> Notice:
    return Notice(int(row.id), int(row.user_id), row.type, int(row.manga_id), row.title,
                  row.chapter, row.message, row.created_at, getattr(row, "label", None))


@dataclass(frozen=True)
class UserEntry:
    """What REGISTER needs of a user: id and token version (None: no token yet)."""

    id: int
    username: str
    token_version: int | None


class NotifyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    # --- triggers -------------------------------------------------------------------------

    def create_trigger(self, kind: str, payload: dict[str, Any], online_users: Collection[int],
                       origin: str) -> TriggerOutcome:
        """Store a trigger and its notifications in one transaction; idempotent per dedup_key."""
        dedup_key = payload.get("dedup_key")
        if dedup_key is not None:
            earlier = self._earlier_trigger(dedup_key)
            if earlier is not None:
                return earlier
        try:
            return self._create(kind, payload, online_users, origin)
        except IntegrityError:
            # A concurrent trigger with the same key committed first: answer like it.
            earlier = self._earlier_trigger(dedup_key) if dedup_key is not None else None
            if earlier is None:
                raise
            return earlier

    def _earlier_trigger(self, dedup_key: str) -> TriggerOutcome | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.notification_triggers.c.id, t.notification_triggers.c.response)
                .where(t.notification_triggers.c.dedup_key == dedup_key)
            ).first()
        if row is None or row.response is None:
            return None
        return TriggerOutcome(int(row.id), dict(row.response), True, [])

    def _create(self, kind: str, payload: dict[str, Any], online_users: Collection[int],
                origin: str) -> TriggerOutcome:
        n = t.notifications
        now = utcnow()
        manga_id = payload["manga_id"]
        chapter = payload.get("chapter")
        with self.engine.begin() as conn:
            if conn.execute(select(t.manga.c.id).where(t.manga.c.id == manga_id)).first() is None:
                raise UnknownManga(f"manga_id {manga_id} is not in the catalogue")
            trigger_id = conn.execute(
                insert(t.notification_triggers).values(
                    dedup_key=payload.get("dedup_key"), type=kind, manga_id=manga_id,
                    payload=payload, created_at=now,
                ).returning(t.notification_triggers.c.id)
            ).scalar_one()
            u = t.users
            recent = exists().where(
                n.c.user_id == u.c.id, n.c.type == kind, n.c.manga_id == manga_id,
                # `IS NOT DISTINCT FROM` cannot use an index on PostgreSQL; these can.
                n.c.chapter.is_(None) if chapter is None else n.c.chapter == chapter,
                n.c.created_at > now - SUPPRESS_WINDOW,
            )
            source = select(
                u.c.id, literal(kind), literal(manga_id), literal(chapter, n.c.chapter.type),
                literal(payload["title"]), literal(payload.get("message"), n.c.message.type),
                literal(False), literal(now, n.c.created_at.type), literal(trigger_id),
            ).where(~recent)
            if kind != "NEW_MANGA":
                source = source.join(t.user_library, and_(
                    t.user_library.c.user_id == u.c.id, t.user_library.c.manga_id == manga_id))
            # One INSERT ... SELECT whatever the number of recipients.
            rows = sorted(conn.execute(insert(n).from_select(
                ["user_id", "type", "manga_id", "chapter", "title", "message", "read",
                 "created_at", "trigger_id"], source).returning(n.c.id, n.c.user_id)).all())
            ids = [int(r.id) for r in rows]
            online = {int(r.user_id) for r in rows} & set(online_users)
            response: dict[str, Any] = {
                "notification_ids": ids[:MAX_LISTED_IDS], "recipients": len(ids),
                "online": len(online),
            }
            if len(ids) > MAX_LISTED_IDS:
                response["notification_ids_summary"] = {
                    "count": len(ids), "first": ids[0], "last": ids[-1], "listed": MAX_LISTED_IDS}
            conn.execute(update(t.notification_triggers)
                         .where(t.notification_triggers.c.id == trigger_id)
                         .values(response=response))
            if self.is_postgres and ids:
                # Delivered to listeners only when this transaction commits.
                conn.execute(text("SELECT pg_notify(:ch, :msg)"),
                             {"ch": NOTIFY_CHANNEL, "msg": f"t {origin} {trigger_id}"})
        notices = [
            Notice(int(r.id), int(r.user_id), kind, manga_id, payload["title"], chapter,
                   payload.get("message"), now)
            for r in rows if int(r.user_id) in online
        ]
        return TriggerOutcome(int(trigger_id), response, False, notices)

    def refresh_statistics(self) -> None:
        """ANALYZE notifications after a big broadcast (PostgreSQL).

        Until autovacuum catches up, the planner believes the table is as small as before and
        picks a nested loop for the one-hour suppression check: seconds instead of
        milliseconds on the next broadcast.
        """
        if self.is_postgres:
            with self.engine.connect() as conn:
                conn.execute(text("ANALYZE notifications"))
                conn.commit()

    def trigger_notices(self, trigger_id: int, user_ids: Collection[int]) -> list[Notice]:
        """Unread notifications of one trigger for the given users (another server's trigger)."""
        wanted = set(user_ids)
        if not wanted:
            return []
        n = t.notifications
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_NOTICE_COLS).where(n.c.trigger_id == trigger_id,
                                                            n.c.read.is_(False))
                                .order_by(n.c.id)).all()
        return [_notice(r) for r in rows if int(r.user_id) in wanted]

    # --- users and sessions ---------------------------------------------------------------

    def users(self, username: str | None = None) -> list[UserEntry]:
        """Every user (or one) as REGISTER sees them: a few bytes each, no secret."""
        u = t.users
        query = select(u.c.id, u.c.username, u.c.token_version)
        if username is not None:
            query = query.where(u.c.username == username)
        with self.engine.connect() as conn:
            return [UserEntry(int(r.id), r.username, r.token_version)
                    for r in conn.execute(query)]

    def accept_registers(self, nonces: list[tuple[int, str]], ttl: timedelta
                         ) -> tuple[set[tuple[int, str]], dict[int, int]]:
        """Record REGISTER nonces; returns (pairs new to every server, unread per new user).

        One statement per batch; a pair already present (used before, by any server sharing
        this database, before or after a restart) is a replay and is not returned.
        """
        if not nonces:
            return set(), {}
        rn = t.register_nonces
        now = utcnow()
        ins = (pg_insert(rn) if self.is_postgres else sqlite_insert(rn))
        stmt = ins.values([{"user_id": u, "nonce": n, "expires_at": now + ttl}
                           for u, n in nonces]).on_conflict_do_nothing()
        n = t.notifications
        with self.engine.begin() as conn:
            fresh = {(int(r.user_id), r.nonce)
                     for r in conn.execute(stmt.returning(rn.c.user_id, rn.c.nonce))}
            users = sorted({u for u, _ in fresh})
            counts = dict.fromkeys(users, 0)
            if users:
                counts.update({int(r.user_id): int(r.c) for r in conn.execute(
                    select(n.c.user_id, func.count().label("c"))
                    .where(n.c.user_id.in_(users), n.c.read.is_(False))
                    .group_by(n.c.user_id))})
        return fresh, counts

    def purge_nonces(self, margin: timedelta) -> int:
        """Forget nonces whose acceptance window has passed `margin` ago."""
        rn = t.register_nonces
        with self.engine.begin() as conn:
            # A margin past expiry: a REGISTER at the very edge of its window still finds it.
            return conn.execute(delete(rn).where(
                rn.c.expires_at < utcnow() - margin)).rowcount or 0

    def first_unread(self, user_ids: Collection[int], limit: int) -> dict[int, list[Notice]]:
        """The oldest `limit` unread notifications of each user, in one query."""
        if not user_ids:
            return {}
        n = t.notifications
        ranked = select(*_NOTICE_COLS, func.row_number().over(
            partition_by=n.c.user_id, order_by=n.c.id).label("rn")).where(
            n.c.user_id.in_(sorted(user_ids)), n.c.read.is_(False)).subquery()
        pages: dict[int, list[Notice]] = {u: [] for u in user_ids}
        with self.engine.connect() as conn:
            for row in conn.execute(select(ranked).where(ranked.c.rn <= limit)
                                    .order_by(ranked.c.user_id, ranked.c.id)):
                pages[int(row.user_id)].append(_notice(row))
        return pages

    def unread(self, user_id: int, limit: int, after_id: int = 0) -> tuple[int, list[Notice]]:
        """(number of unread, the oldest `limit` unread with id > after_id)."""
        n = t.notifications
        with self.engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(n).where(
                n.c.user_id == user_id, n.c.read.is_(False))).scalar_one()
            rows = conn.execute(select(*_NOTICE_COLS).where(
                n.c.user_id == user_id, n.c.read.is_(False), n.c.id > after_id)
                .order_by(n.c.id).limit(limit)).all()
        return int(count), [_notice(r) for r in rows]

    def mark_read(self, acks: Iterable[tuple[int, int]],
                  known: Collection[tuple[int, int]] = ()) -> int:
        """Mark (user_id, notification_id) pairs read; pairs of other users match nothing.

        `known` pairs were read from this user's own rows by the caller (pushed to that user),
        so they are updated by id alone: one statement for thousands of ACKs.
        """
        known_set = set(known)
        pairs = sorted(set(acks) | known_set)
        if not pairs:
            return 0
        n = t.notifications
        now = utcnow()
        by_id = sorted(i for _, i in known_set)
        by_user: dict[int, list[int]] = {}
        for user_id, nid in pairs:
            if (user_id, nid) not in known_set:
                by_user.setdefault(user_id, []).append(nid)
        changed = 0
        # (A row-value `(user_id, id) IN (...)` would do all at once, but SQLAlchemy's cached
        # SQLite rendering of it matched nothing after its first use.)
        by_user_stmt = (update(n).where(n.c.user_id == bindparam("u"),
                                        n.c.id.in_(bindparam("ids", expanding=True)),
                                        n.c.read.is_(False))
                        .values(read=True, delivered_at=now))
        with self.engine.begin() as conn:
            for start in range(0, len(by_id), _CHUNK):
                result = conn.execute(update(n).where(n.c.id.in_(by_id[start:start + _CHUNK]),
                                                      n.c.read.is_(False))
                                      .values(read=True, delivered_at=now))
                changed += result.rowcount or 0
            for user_id, ids in by_user.items():
                for start in range(0, len(ids), _CHUNK):
                    result = conn.execute(by_user_stmt,
                                          {"u": user_id, "ids": ids[start:start + _CHUNK]})
                    changed += result.rowcount or 0
            if self.is_postgres:
                conn.execute(text("SELECT pg_notify(:ch, :msg)"), {
                    "ch": NOTIFY_CHANNEL,
                    "msg": "a " + " ".join(f"{u}:{i}" for u, i in pairs[:500]),
                })
        return changed

    # --- health and metrics ---------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            conn.execute(select(literal(1))).scalar_one()
            breaker = conn.execute(select(t.mangadex_circuit.c.state,
                                          t.mangadex_circuit.c.opened_until)
                                   .where(t.mangadex_circuit.c.name == "mangadex")).first()
            syncs = conn.execute(select(t.sync_state).order_by(t.sync_state.c.sync_type)).all()

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "mangadex": {
                "breaker": breaker.state if breaker else "closed",
                "opened_until": iso(breaker.opened_until) if breaker else None,
            },
            "syncs": {
                s.sync_type: {"status": s.status, "last_run_at": iso(s.last_run_at),
                              "last_success_at": iso(s.last_success_at),
                              "last_cursor": s.last_cursor, "error_message": s.error_message}
                for s in syncs
            },
        }

    def metric_rows(self) -> tuple[int, list[tuple[str, str, float]]]:
        """(unread notifications, rows of sync_metrics)."""
        n = t.notifications
        with self.engine.connect() as conn:
            pending = conn.execute(select(func.count()).select_from(n)
                                   .where(n.c.read.is_(False))).scalar_one()
            rows = conn.execute(select(t.sync_metrics.c.name, t.sync_metrics.c.labels,
                                       t.sync_metrics.c.value)).all()
        return int(pending), [(r.name, r.labels or "", float(r.value)) for r in rows]
