"""`mangasync status`: sync state, outbox backlog, counts and breaker, from the MangaHub DB only.

It reads nothing but `DATABASE_URL`, so it answers the same way whether Dagster, the server or
MangaDex are up or not: an operator can run it during an outage to see what is stuck.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import click
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.db.circuit import displayed_state
from mangasync_pipeline.db.engine import describe, make_engine, sqlite_file
from mangasync_pipeline.db.migrate import SchemaError, check_schema
from mangasync_pipeline.sync.quarantine import RETRY_AFTER

SYNC_TYPES = ("initial_sync", "new_manga_poll", "chapter_check")

# Exit codes, for monitoring scripts (README, "Commands"); 2 is a usage error, as everywhere.
EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1  # the report is printed in full; its problems say what to look at
EXIT_UNKNOWN = 3  # no report: a setting is invalid or the database cannot be read


class StatusUnknown(click.ClickException):
    """The status could not be read at all; the message says why, in one line."""

    exit_code = EXIT_UNKNOWN


@dataclass
class SyncStatus:
    sync_type: str
    status: str  # idle, running, completed, error, or "never run" when there is no row yet
    last_run_at: datetime | None = None
    last_success_at: datetime | None = None
    last_cursor: str | None = None
    error_message: str | None = None


@dataclass
class BreakerStatus:
    name: str
    state: str  # closed, open, half_open (as stored by the MangaDex client)
    consecutive_failures: int = 0
    opened_until: datetime | None = None
    last_error: str | None = None


@dataclass
class StatusReport:
    database: str
    checked_at: datetime
    syncs: list[SyncStatus]
    outbox_pending: int
    outbox_oldest_pending_at: datetime | None
    outbox_oldest_error: str | None
    manga: int
    chapters: int
    notifications: int
    notifications_unread: int
    users: int
    breakers: list[BreakerStatus] = field(default_factory=list)
    content_ratings: tuple[str, ...] = ()  # MANGASYNC_CONTENT_RATINGS: what the catalogue holds
    # MangaDex records skipped by the boundary checks (read again later), newest first.
    quarantined: int = 0
    quarantined_latest: list[dict[str, Any]] = field(default_factory=list)
    # Notifications the server refused for good: never delivered, kept for review.
    outbox_refused: int = 0
    outbox_refused_latest: str | None = None

    @property
    def outbox_oldest_age_seconds(self) -> float | None:
        if self.outbox_oldest_pending_at is None:
            return None
        return max(0.0, (self.checked_at - self.outbox_oldest_pending_at).total_seconds())

    @property
    def problems(self) -> list[str]:
        """What an operator should look at, one line each; empty when all is well."""
        found = [
            f"{s.sync_type} failed: {s.error_message or 'no reason recorded'}"
            for s in self.syncs
            if s.status == "error"
        ]
        for b in self.breakers:
            if b.state != "closed":
                until = f" until {_when(b.opened_until)}" if b.opened_until else ""
                found.append(f"MangaDex breaker {b.name} is {b.state}{until}: {b.last_error or ''}"
                             .rstrip(": "))
        if self.outbox_refused:
            found.append(f"{self.outbox_refused} notifications refused by the server, never "
                         f"delivered; latest: {_short(self.outbox_refused_latest, 120)}")
        age = self.outbox_oldest_age_seconds
        if age is not None and age > 600:
            found.append(f"{self.outbox_pending} notifications pending delivery, oldest "
                         f"{_age(age)} old: is the notification server up?")
        return found

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outbox_oldest_age_seconds"] = self.outbox_oldest_age_seconds
        data["problems"] = self.problems
        data["healthy"] = not self.problems
        return data


def collect_status(engine: Engine) -> StatusReport:
    """One consistent read of everything `mangasync status` shows."""
    with engine.connect() as conn:
        rows = {r.sync_type: r for r in conn.execute(select(t.sync_state))}
        syncs = [
            SyncStatus(
                sync_type=name,
                status=row.status,
                last_run_at=row.last_run_at,
                last_success_at=row.last_success_at,
                last_cursor=row.last_cursor,
                error_message=row.error_message,
            )
            if (row := rows.pop(name, None)) is not None
            else SyncStatus(sync_type=name, status="never run")
            for name in SYNC_TYPES
        ]
        # Sync types added later still show up, after the contractual three.
        syncs += [
            SyncStatus(r.sync_type, r.status, r.last_run_at, r.last_success_at, r.last_cursor,
                       r.error_message)
            for r in sorted(rows.values(), key=lambda r: r.sync_type)
        ]

        pending = t.notification_outbox.c.status == "pending"
        outbox_pending = conn.scalar(select(func.count()).where(pending)) or 0
        oldest = conn.execute(
            select(t.notification_outbox.c.created_at, t.notification_outbox.c.last_error)
            .where(pending)
            .order_by(t.notification_outbox.c.id)
            .limit(1)
        ).first()

        def count(table: Any, *where: Any) -> int:
            return conn.scalar(select(func.count()).select_from(table).where(*where)) or 0

        q = t.quarantined_records
        latest = [{"source": r.source, "mangadex_id": r.mangadex_id, "field": r.field,
                   "reason": r.reason, "first_seen": r.first_seen, "last_seen": r.last_seen}
                  for r in conn.execute(select(q).order_by(q.c.last_seen.desc(), q.c.id.desc())
                                        .limit(5))]
        refused = t.notification_outbox.c.status == "rejected"
        refused_latest = conn.execute(
            select(t.notification_outbox.c.dedup_key, t.notification_outbox.c.last_error)
            .where(refused).order_by(t.notification_outbox.c.id.desc()).limit(1)).first()
        now = utcnow()
        breakers = [
            BreakerStatus(
                name=r.name,
                # From opened_until and the clock: the stored state changes only when some
                # process calls MangaDex.
                state=displayed_state(r.state, r.opened_until, now),
                consecutive_failures=r.consecutive_failures,
                opened_until=r.opened_until,
                last_error=r.last_error,
            )
            for r in conn.execute(select(t.mangadex_circuit).order_by(t.mangadex_circuit.c.name))
        ]
        return StatusReport(
            database=describe(engine.url.render_as_string(hide_password=False)),
            checked_at=now,
            syncs=syncs,
            outbox_pending=outbox_pending,
            outbox_oldest_pending_at=oldest.created_at if oldest else None,
            outbox_oldest_error=oldest.last_error if oldest else None,
            manga=count(t.manga),
            chapters=count(t.chapters),
            notifications=count(t.notifications),
            notifications_unread=count(t.notifications, t.notifications.c.read.is_(False)),
            users=count(t.users),
            breakers=breakers,
            quarantined=count(q),
            quarantined_latest=latest,
            outbox_refused=count(t.notification_outbox, refused),
            outbox_refused_latest=(f"{refused_latest.dedup_key}: {refused_latest.last_error}"
                                   if refused_latest else None),
        )


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths)),
            *(fmt.format(*r).rstrip() for r in rows)]


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def render_table(report: StatusReport) -> str:
    lines = [f"MangaHub database: {report.database}", ""]
    lines += _table(
        ["sync", "state", "last run", "last success", "cursor", "error"],
        [
            [s.sync_type, s.status, _when(s.last_run_at), _when(s.last_success_at),
             _short(s.last_cursor, 32), _short(s.error_message)]
            for s in report.syncs
        ],
    )
    lines.append("")
    oldest = report.outbox_oldest_age_seconds
    outbox = f"{report.outbox_pending} pending"
    if oldest is not None:
        outbox += f", oldest {_age(oldest)} old"
        if report.outbox_oldest_error:
            outbox += f" (last error: {_short(report.outbox_oldest_error)})"
    if report.breakers:
        breaker = "; ".join(
            f"{b.name} {b.state}"
            + (f" until {_when(b.opened_until)}" if b.state != "closed" and b.opened_until else "")
            + (f", {b.consecutive_failures} failures in a row" if b.consecutive_failures else "")
            for b in report.breakers
        )
    else:
        breaker = "closed (no MangaDex failures recorded)"
    if report.outbox_refused:
        outbox += f"; {report.outbox_refused} refused by the server"
    retry = int(RETRY_AFTER.total_seconds() // 60)
    quarantined = (f"{report.quarantined} MangaDex records (read again every {retry} min "
                   "until they pass)" if report.quarantined else "none")
    lines += [
        f"outbox:         {outbox}",
        f"quarantined:    {quarantined}",
        *(f"  {r['source']} {r['mangadex_id']} {r['field']}: {_short(r['reason'], 70)}"
          for r in report.quarantined_latest),
        f"manga:          {report.manga}"
        + (f" (content ratings {', '.join(report.content_ratings)})"
           if report.content_ratings else ""),
        f"chapters:       {report.chapters}",
        f"notifications:  {report.notifications} ({report.notifications_unread} unread)",
        f"users:          {report.users}",
        f"MangaDex:       breaker {breaker}",
        "",
    ]
    problems = report.problems
    lines += [f"problem: {p}" for p in problems] if problems else ["healthy: no problems found"]
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


@click.command(epilog="Exit codes: 0 healthy, 1 problems found (listed in the output), "
                      "2 usage error, 3 status unknown (bad setting, database unreadable or "
                      "not migrated).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(as_json: bool) -> None:
    """Show sync state, pending notifications, counts and MangaDex breaker state."""
    from mangasync_pipeline.cli import load_settings

    try:
        settings = load_settings()
    except click.ClickException as exc:
        raise StatusUnknown(exc.message) from None
    missing = sqlite_file(settings.database_url)
    if missing is not None and not missing.exists():
        # Reading status must not leave an empty database (and its folder) behind.
        raise StatusUnknown(f"no MangaHub database at {missing}: run `mangasync migrate` "
                            "first, or set DATABASE_URL")
    engine = make_engine(settings.database_url)
    try:
        check_schema(engine)
        report = collect_status(engine)
        report.content_ratings = settings.content_ratings
    except SchemaError as exc:
        raise StatusUnknown(str(exc)) from None
    except SQLAlchemyError as exc:
        reason = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        raise StatusUnknown(
            f"cannot read {describe(settings.database_url)}: {reason}"
        ) from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.to_json(), default=_json_default, indent=2))
    else:
        click.echo(render_table(report))
    if report.problems:
        sys.exit(EXIT_UNHEALTHY)
