"""Hands outbox entries to the notification server's HTTP triggers, oldest first.

Delivery is at least once and in order: the head of the queue must be accepted before
anything behind it is sent, and a server that is down only delays notifications. The
server's `dedup_key` handling makes a redelivery harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from filelock import FileLock, Timeout
from sqlalchemy import Engine, text

from mangasync_pipeline import __version__
from mangasync_pipeline.config import utcnow
from mangasync_pipeline.sync import outbox

log = logging.getLogger("mangasync.notifier")

_LOCK_KEY = 0x6D616E6761  # "manga": the advisory lock of outbox delivery


@dataclass
class DeliveryReport:
    delivered: int = 0
    rejected: int = 0
    failed: int = 0
    pending: int = 0
    waiting_until: datetime | None = None
    errors: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, object]:
        return {"delivered": self.delivered, "rejected": self.rejected,
                "failed_attempts": self.failed, "still_pending": self.pending}


class Notifier:
    def __init__(self, server_url: str, token: str | None = None, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"User-Agent": f"mangasync/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.server_url = server_url.rstrip("/")
        self._http = httpx.Client(base_url=self.server_url, headers=headers,
                                  timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def deliver(self, engine: Engine, *, limit: int = 1000, now: datetime | None = None,
                ignore_backoff: bool = False) -> DeliveryReport:
        """Send due entries in id order; stop at the first one the server cannot take now."""
        report = DeliveryReport()
        now = now or utcnow()
        with single_deliverer(engine) as mine:
            if mine:
                self._deliver_due(engine, report, limit, now, ignore_backoff)
            else:
                log.info("another process is delivering notifications; leaving it to it")
        with engine.connect() as conn:
            report.pending = outbox.backlog(conn).pending
        return report

    def _deliver_due(self, engine: Engine, report: DeliveryReport, limit: int, now: datetime,
                     ignore_backoff: bool) -> None:
        with engine.connect() as conn:
            entries = outbox.pending(conn, limit)
        for entry in entries:
            if not ignore_backoff and entry.next_attempt_at > now:
                report.waiting_until = entry.next_attempt_at
                break
            outcome = self._post(entry)
            with engine.begin() as conn:
                if outcome is None:
                    outbox.mark_delivered(conn, entry.id, utcnow())
                    report.delivered += 1
                    continue
                permanent, error = outcome
                if permanent:
                    outbox.mark_rejected(conn, entry.id, error)
                    report.rejected += 1
                    log.error("notification %s (%s) rejected by the server: %s",
                              entry.id, entry.dedup_key, error)
                    continue
                retry_at = outbox.mark_failed(conn, entry, error, utcnow())
            report.failed += 1
            report.errors.append(error)
            report.waiting_until = retry_at
            log.warning("notification %s (%s) not delivered, retry after %s: %s",
                        entry.id, entry.dedup_key, retry_at.isoformat(timespec="seconds"),
                        error)
            break

    def _post(self, entry: outbox.OutboxEntry) -> tuple[bool, str] | None:
        """None when accepted; else (permanent?, reason)."""
        body = {**entry.payload, "dedup_key": entry.dedup_key}
        path = f"/notify/{entry.kind}"
        try:
            response = self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            return False, f"{self.server_url}{path}: {type(exc).__name__}: {exc}"
        if response.status_code in (200, 201, 202):
            return None
        detail = response.text[:300]
        # The server's own refusals (400/404/413 with its JSON error) will never succeed;
        # 401, 5xx, and a 404 from something else (a wrong URL, a proxy) can.
        permanent = response.status_code in (400, 413, 422) or (
            response.status_code == 404 and _server_error(response))
        return permanent, f"{path} answered {response.status_code}: {detail}"


def _server_error(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str)


@contextmanager
def single_deliverer(engine: Engine) -> Iterator[bool]:
    """One deliverer at a time per database, so the queue goes out in order.

    PostgreSQL: a session advisory lock. SQLite (one host): a lock file beside the database.
    Yields whether this process holds it; nobody waits.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            mine = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                     {"k": _LOCK_KEY}).scalar())
            conn.commit()
            try:
                yield mine
            finally:
                if mine:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                    conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield True
        return
    lock = FileLock(f"{database}.outbox.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
