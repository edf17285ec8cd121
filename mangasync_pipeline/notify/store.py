"""Database work of the notification server: blocking SQLAlchemy calls, run in a thread.

Every method here is synchronous and short; the server calls them through an executor so the
event loop never waits on the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
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
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.db.circuit import displayed_state

# Above this many, a trigger's answer lists only the first ids and summarises the rest.
MAX_LISTED_IDS = 100
SUPPRESS_WINDOW = timedelta(hours=1)
NOTIFY_CHANNEL = "mangasync_notify"
_CHUNK = 2000


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


ACCEPTED = "accepted"
DUPLICATE = "duplicate"
UNKNOWN_MANGA = "unknown manga"
INVALID = "invalid"


@dataclass(frozen=True)
class _PgRow:
    trigger_id: int
    id: int | None
    user_id: int | None
    same_as: int | None = None  # a reader left out: the notification they already have


@dataclass(frozen=True)
class _Stored:
    """What one trigger stored: its id, its notifications (id, user_id) and the readers it
    left out, each with the identical notification they got within the hour."""

    trigger_id: int | None
    rows: list[Any]
    suppressed: list[tuple[int, int]]


@dataclass(frozen=True)
class TriggerOutcome:
    trigger_id: int | None
    response: dict[str, Any]
    result: str  # ACCEPTED, DUPLICATE (an earlier trigger had the dedup_key) or UNKNOWN_MANGA
    notices: list[Notice]  # for users online here; empty unless accepted

    @property
    def replayed(self) -> bool:
        return self.result == DUPLICATE


_NOTICE_COLS = (t.notifications.c.id, t.notifications.c.user_id, t.notifications.c.type,
                t.notifications.c.manga_id, t.notifications.c.title, t.notifications.c.chapter,
                t.notifications.c.message, t.notifications.c.created_at,
                t.notifications.c.label)


# A notification is suppressed only when the same reader got the very same thing within the
# hour: same type, manga, chapter number and label, title and message (the language and the
# chapter title are part of the message). Triggers with a dedup_key are deduplicated by that
# key alone, and a chapter without a number carries nothing that tells two of them apart: for
# those nothing is suppressed (a reader seeing one twice loses less than one never seen).
_PG_SAME = """n.user_id = u.id AND n.type = p.type AND n.manga_id = p.manga_id AND {chapter}
  AND n.label IS NOT DISTINCT FROM p.label AND n.title = p.title
  AND n.message IS NOT DISTINCT FROM p.message AND n.created_at > p.since"""
_PG_TRIGGER = """
WITH p AS (SELECT CAST(:manga_id AS bigint) AS manga_id, CAST(:type AS varchar) AS type,
                  CAST(:chapter AS varchar) AS chapter, CAST(:label AS varchar) AS label,
                  CAST(:title AS text) AS title, CAST(:message AS text) AS message,
                  CAST(:now AS timestamptz) AS now, CAST(:since AS timestamptz) AS since),
m AS (SELECT manga.id FROM manga, p WHERE manga.id = p.manga_id),
tr AS (
  INSERT INTO notification_triggers (dedup_key, type, manga_id, payload, created_at)
  SELECT CAST(:dedup_key AS varchar), p.type, m.id, CAST(:payload AS json), p.now FROM m, p
  ON CONFLICT (dedup_key) DO NOTHING RETURNING id),
ins AS (
  INSERT INTO notifications (user_id, type, manga_id, chapter, label, title, message, read,
                             created_at, trigger_id)
  SELECT u.id, p.type, p.manga_id, p.chapter, p.label, p.title, p.message, false, p.now, tr.id
  FROM tr CROSS JOIN p CROSS JOIN users u {library}
  {fresh}
  RETURNING id, user_id)
SELECT tr.id AS trigger_id, ins.id, ins.user_id, CAST(NULL AS bigint) AS same_as
FROM tr LEFT JOIN ins ON true
{suppressed}
ORDER BY 2
"""
_PG_FRESH = "WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE {same})"
# The readers left out, each with the notification they already have (a semi-join, then the
# id only for the few rows it keeps).
_PG_SUPPRESSED = """UNION ALL
SELECT tr.id, NULL, u.id, (SELECT max(n.id) FROM notifications n WHERE {same})
FROM tr CROSS JOIN p CROSS JOIN users u {library}
WHERE EXISTS (SELECT 1 FROM notifications n WHERE {same})"""
_PG_LIBRARY = "JOIN user_library l ON l.user_id = u.id AND l.manga_id = p.manga_id"
# How a trigger is compared with the hour's notifications: not at all (a dedup_key, or an
# unnumbered chapter), or by chapter number (or its absence) and what the reader sees.
KEYED, NUMBERED, UNNUMBERED = "keyed", "numbered", "unnumbered"


def _compare(kind: str, payload: dict[str, Any]) -> str:
    if payload.get("dedup_key") is not None:
        return KEYED
    if payload.get("chapter") is not None:
        return NUMBERED
    return KEYED if kind == "NEW_CHAPTER" else UNNUMBERED


def _pg_statement(broadcast: bool, compare: str) -> str:
    library = "" if broadcast else _PG_LIBRARY
    if compare == KEYED:
        fresh = suppressed = ""
    else:
        same = _PG_SAME.format(chapter="n.chapter = p.chapter" if compare == NUMBERED
                               else "n.chapter IS NULL")
        fresh = _PG_FRESH.format(same=same)
        suppressed = _PG_SUPPRESSED.format(same=same, library=library)
    return _PG_TRIGGER.format(library=library, fresh=fresh, suppressed=suppressed)


# One statement per trigger, built once: on a busy host each round trip to PostgreSQL costs
# far more than the work it carries, and SQLAlchemy constructs rebuilt per call cost as much.
# In psycopg's own placeholder style: a batch's statements go out in one pipeline, without
# waiting for each answer.
_PG_STATEMENTS = {
    (broadcast, compare): re.sub(r":(\w+)", r"%(\1)s", _pg_statement(broadcast, compare))
    for broadcast in (True, False) for compare in (KEYED, NUMBERED, UNNUMBERED)
}
_PG_FINISH_SQL = re.sub(r":(\w+)", r"%(\1)s", """
WITH upd AS (
  UPDATE notification_triggers t SET response = CAST(v.resp AS json)
  FROM unnest(CAST(:ids AS bigint[]), CAST(:resps AS text[])) AS v(id, resp)
  WHERE t.id = v.id RETURNING 1)
SELECT (SELECT count(*) FROM upd),
       (SELECT count(pg_notify(:ch, m)) FROM unnest(CAST(:msgs AS text[])) AS m)
""")


def _notice(row: Any) -> Notice:
    return Notice(int(row.id), int(row.user_id), row.type, int(row.manga_id), row.title,
                  row.chapter, row.message, row.created_at, row.label)


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
        self._dialect = postgresql if self.is_postgres else sqlite

    # --- triggers -------------------------------------------------------------------------

    def create_trigger(self, kind: str, payload: dict[str, Any], online_users: Collection[int],
                       origin: str) -> TriggerOutcome:
        """Store a trigger and its notifications in one transaction; idempotent per dedup_key."""
        return self.create_triggers([(kind, payload)], online_users, origin)[0]

    def create_triggers(self, items: Sequence[tuple[str, dict[str, Any]]],
                        online_users: Collection[int], origin: str) -> list[TriggerOutcome]:
        """Store triggers (type, payload) in order, all in one transaction.

        Each has its own outcome: a repeated dedup_key (an earlier request, or earlier in this
        batch) answers like the first; an unknown manga stores nothing for that trigger.
        """
        now = utcnow()
        online = set(online_users)
        tr = t.notification_triggers
        outcomes: list[TriggerOutcome] = []
        fresh: dict[int, dict[str, Any]] = {}
        with self.engine.begin() as conn:
            known = None if self.is_postgres else set(conn.execute(
                select(t.manga.c.id).where(t.manga.c.id.in_({p["manga_id"] for _, p in items}))
            ).scalars())  # PostgreSQL: the trigger's one statement checks its manga itself
            stored = self._store_pg(conn, items, now) if known is None else None
            for index, (kind, payload) in enumerate(items):
                manga_id = payload["manga_id"]
                dedup_key = payload.get("dedup_key")
                trigger_id, rows, suppressed = None, [], []
                if stored is not None:
                    trigger_id, rows, suppressed = (stored[index].trigger_id, stored[index].rows,
                                                    stored[index].suppressed)
                elif known is not None and manga_id in known:
                    # ON CONFLICT waits for a concurrent holder of the key to commit, then
                    # skips: no IntegrityError, so one duplicate does not abort a batch.
                    trigger_id = conn.execute(
                        self._dialect.insert(tr).values(
                            dedup_key=dedup_key, type=kind, manga_id=manga_id, payload=payload,
                            created_at=now,
                        ).on_conflict_do_nothing(index_elements=["dedup_key"])
                        .returning(tr.c.id)).scalar()
                    if trigger_id is not None:
                        done = self._store_notifications(conn, int(trigger_id), kind, payload,
                                                         now)
                        rows, suppressed = done.rows, done.suppressed
                if trigger_id is None:
                    earlier = None if dedup_key is None else conn.execute(
                        select(tr.c.id, tr.c.response).where(tr.c.dedup_key == dedup_key)
                    ).first()
                    if earlier is None:
                        outcomes.append(TriggerOutcome(None, {
                            "error": f"manga_id {manga_id} is not in the catalogue"},
                            UNKNOWN_MANGA, []))
                        continue
                    # Earlier in this batch: its response is not written back yet.
                    response = fresh.get(int(earlier.id)) or dict(earlier.response or {})
                    outcomes.append(TriggerOutcome(int(earlier.id), response, DUPLICATE, []))
                    continue
                ids = [int(r.id) for r in rows]
                reached = {int(r.user_id) for r in rows} & online
                response = {"notification_ids": ids[:MAX_LISTED_IDS], "recipients": len(ids),
                            "online": len(reached)}
                if len(ids) > MAX_LISTED_IDS:
                    response["notification_ids_summary"] = {
                        "count": len(ids), "first": ids[0], "last": ids[-1],
                        "listed": MAX_LISTED_IDS}
                if suppressed:
                    # Said per reader, so a caller never takes "0 recipients" for "nobody".
                    response["suppressed"] = [{"user_id": u, "same_as": same_as}
                                              for u, same_as in suppressed[:MAX_LISTED_IDS]]
                    response["suppressed_count"] = len(suppressed)
                fresh[int(trigger_id)] = response
                notices = [
                    Notice(int(r.id), int(r.user_id), kind, manga_id, payload["title"],
                           payload.get("chapter"), payload.get("message"), now,
                           payload.get("label"))
                    for r in rows if int(r.user_id) in reached
                ]
                outcomes.append(TriggerOutcome(int(trigger_id), response, ACCEPTED, notices))
            # Responses are kept for replays: a repeated dedup_key answers like the first.
            if fresh and self.is_postgres:
                messages = [f"t {origin} {tid}" for tid, r in fresh.items() if r["recipients"]]
                # pg_notify is delivered to listeners only when this transaction commits.
                # The commit rides in the same pipeline: one round trip instead of two (the
                # engine's own commit that follows finds nothing left to commit).
                raw = conn.connection.driver_connection
                assert raw is not None
                with raw.pipeline():
                    raw.execute(_PG_FINISH_SQL, {
                        "ids": list(fresh), "resps": [json.dumps(r) for r in fresh.values()],
                        "ch": NOTIFY_CHANNEL, "msgs": messages})
                    raw.commit()
            elif fresh:
                conn.execute(update(tr).where(tr.c.id == bindparam("tid"))
                             .values(response=bindparam("resp")),
                             [{"tid": tid, "resp": r} for tid, r in fresh.items()])
        return outcomes

    def _store_pg(self, conn: Connection, items: Sequence[tuple[str, dict[str, Any]]],
                  now: datetime) -> list[_Stored]:
        """Per trigger, what it stored: one statement each, all sent in one pipeline. No
        trigger id when the manga is unknown or the dedup_key was used before; statements run
        in order, so a later one sees what an earlier one stored."""
        raw = conn.connection.driver_connection
        assert raw is not None
        since = now - SUPPRESS_WINDOW
        cursors = []
        with raw.pipeline():
            for kind, payload in items:
                chapter = payload.get("chapter")
                cursor = raw.cursor()
                cursor.execute(_PG_STATEMENTS[kind == "NEW_MANGA", _compare(kind, payload)], {
                    "manga_id": payload["manga_id"], "dedup_key": payload.get("dedup_key"),
                    "type": kind, "payload": json.dumps(payload), "now": now,
                    "chapter": chapter, "label": payload.get("label"),
                    "title": payload["title"], "message": payload.get("message"),
                    "since": since,
                })
                cursors.append(cursor)
        out: list[_Stored] = []
        for cursor in cursors:
            result = [_PgRow(*row) for row in cursor.fetchall()]
            cursor.close()
            out.append(_Stored(result[0].trigger_id if result else None,
                               [r for r in result if r.id is not None],
                               sorted((int(r.user_id), int(r.same_as)) for r in result
                                      if r.same_as is not None)))
        return out

    def _store_notifications(self, conn: Connection, trigger_id: int, kind: str,
                             payload: dict[str, Any], now: datetime) -> _Stored:
        n = t.notifications
        u = t.users
        manga_id = payload["manga_id"]
        chapter = payload.get("chapter")
        compare = _compare(kind, payload)
        same = [
            n.c.user_id == u.c.id, n.c.type == kind, n.c.manga_id == manga_id,
            # `IS NOT DISTINCT FROM` cannot use an index on PostgreSQL; these can.
            n.c.chapter.is_(None) if chapter is None else n.c.chapter == chapter,
            n.c.label.is_not_distinct_from(payload.get("label")),
            n.c.title == payload["title"],
            n.c.message.is_not_distinct_from(payload.get("message")),
            n.c.created_at > now - SUPPRESS_WINDOW,
        ]

        def recipients(query: Any) -> Any:
            if kind == "NEW_MANGA":
                return query
            return query.join(t.user_library, and_(
                t.user_library.c.user_id == u.c.id, t.user_library.c.manga_id == manga_id))

        suppressed: list[tuple[int, int]] = []
        source = select(
            u.c.id, literal(kind), literal(manga_id), literal(chapter, n.c.chapter.type),
            literal(payload.get("label"), n.c.label.type),
            literal(payload["title"]), literal(payload.get("message"), n.c.message.type),
            literal(False), literal(now, n.c.created_at.type), literal(trigger_id),
        )
        if compare != KEYED:
            recent = exists().where(*same)
            suppressed = sorted((int(r[0]), int(r[1])) for r in conn.execute(recipients(
                select(u.c.id, select(func.max(n.c.id)).where(*same).scalar_subquery())
                .where(recent))))
            source = source.where(~recent)
        # One INSERT ... SELECT whatever the number of recipients.
        rows = sorted(conn.execute(insert(n).from_select(
            ["user_id", "type", "manga_id", "chapter", "label", "title", "message", "read",
             "created_at", "trigger_id"], recipients(source)).returning(n.c.id, n.c.user_id)
        ).all())
        return _Stored(trigger_id, rows, suppressed)

    def refresh_statistics(self) -> int:
        """ANALYZE notifications (PostgreSQL); returns the planner's row count afterwards.

        Until autovacuum catches up, the planner believes the table is as small as before and
        picks a nested loop for the one-hour suppression check: seconds instead of
        milliseconds on the next broadcast.
        """
        if not self.is_postgres:
            return 0
        with self.engine.connect() as conn:
            conn.execute(text("ANALYZE notifications"))
            rows = conn.execute(text("SELECT reltuples FROM pg_class "
                                     "WHERE oid = 'notifications'::regclass")).scalar()
            conn.commit()
        return max(0, int(rows or 0))

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

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(literal(1))).scalar_one()

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
                "breaker": displayed_state(breaker.state, breaker.opened_until, utcnow())
                if breaker else "closed",
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
        """(unread notifications, rows of sync_metrics and the gauges alerts watch)."""
        n = t.notifications
        with self.engine.connect() as conn:
            pending = conn.execute(select(func.count()).select_from(n)
                                   .where(n.c.read.is_(False))).scalar_one()
            rows = conn.execute(select(t.sync_metrics.c.name, t.sync_metrics.c.labels,
                                       t.sync_metrics.c.value)).all()
            gauges = _alert_gauges(conn, utcnow())
        return int(pending), [(r.name, r.labels or "", float(r.value)) for r in rows] + gauges


def _alert_gauges(conn: Connection, now: datetime) -> list[tuple[str, str, float]]:
    """What deploy/prometheus/alerts.yml watches, read from the tables at scrape time: the
    breaker (1 while not closed: open, or half-open waiting on its probe), the outbox the
    pipeline has not handed over yet, and each sync's last success."""
    gauges: list[tuple[str, str, float]] = []
    for name, state in conn.execute(select(t.mangadex_circuit.c.name,
                                           t.mangadex_circuit.c.state)):
        gauges.append(("mangadex_breaker_open", f"name={name}", float(state != "closed")))
    o = t.notification_outbox
    count, oldest = conn.execute(select(func.count(), func.min(o.c.created_at))
                                 .where(o.c.status == "pending")).one()
    gauges.append(("outbox_pending", "", float(count)))
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    gauges.append(("outbox_oldest_pending_age_seconds", "", max(0.0, age)))
    for sync_type, success in conn.execute(select(t.sync_state.c.sync_type,
                                                  t.sync_state.c.last_success_at)):
        if success is not None:
            gauges.append(("sync_last_success_timestamp_seconds", f"type={sync_type}",
                           success.timestamp()))
    return gauges
