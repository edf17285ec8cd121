"""Hands outbox entries to the notification server's HTTP triggers, oldest first.

Delivery is at least once and in order: up to 500 entries go in one `/notify/batch` request,
which the server stores in one transaction and answers per entry; the head of the queue must be
accepted before anything behind it is sent, and a server that is down only delays
notifications. The server's `dedup_key` handling makes a redelivery (a batch retried after its
answer was lost) harmless.
"""

from __future__ import annotations

import json
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
from mangasync_pipeline.sync import metrics, outbox
from mangasync_pipeline.tls import tls_context

log = logging.getLogger("mangasync.notifier")

_LOCK_KEY = 0x6D616E6761  # "manga": the advisory lock of outbox delivery
BATCH_PATH = "/notify/batch"
BATCH = 500  # the server's limit of triggers per batch
MAX_BATCH_BYTES = 900 * 1024  # under its 1 MiB body limit, with room for JSON overhead


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
                                  transport=transport, verify=tls_context())
        self._batch = True  # until a server answers that it has no batch route
        self._last_failure = ""

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def deliver(self, engine: Engine, *, limit: int = 100_000, now: datetime | None = None,
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
        after = 0
        while report.delivered + report.rejected < limit:
            with engine.connect() as conn:
                entries = outbox.pending(conn, min(BATCH, limit - report.delivered
                                                   - report.rejected), after_id=after)
            if not entries:
                return
            if not ignore_backoff and entries[0].next_attempt_at > now:
                report.waiting_until = entries[0].next_attempt_at
                return
            batch = _fitting(entries)
            verdicts = self._post_batch(batch) if self._batch else None
            if verdicts is None:
                verdicts = self._post_each(batch)
            done = [v for v in verdicts if v is not None]
            with engine.begin() as conn:
                outbox.mark_settled(conn, [(e.id, v) for e, v in zip(batch, done, strict=False)],
                                    utcnow())
                metrics.add(conn, _settled_counts(batch, done))
            for entry, verdict in zip(batch, done, strict=False):
                if verdict == "":
                    report.delivered += 1
                else:
                    report.rejected += 1
                    log.error("notification %s (%s) rejected by the server: %s",
                              entry.id, entry.dedup_key, verdict)
            if len(done) < len(batch):
                head = batch[len(done)]
                failure = self._last_failure
                with engine.begin() as conn:
                    retry_at = outbox.mark_failed(conn, head, failure, utcnow())
                report.failed += 1
                report.errors.append(failure)
                report.waiting_until = retry_at
                log.warning("notification %s (%s) not delivered, retry after %s: %s",
                            head.id, head.dedup_key, retry_at.isoformat(timespec="seconds"),
                            failure)
                return
            after = batch[-1].id

    def _post_batch(self, batch: list[outbox.OutboxEntry]) -> list[str | None] | None:
        """One verdict per entry ("" delivered, else why it was rejected), or None to send
        them one by one (a server without the batch route, or a batch it refused as a whole).
        A transient failure is one None verdict for the head: nothing after it was settled."""
        body = {"triggers": [{**e.payload, "kind": e.kind, "dedup_key": e.dedup_key}
                             for e in batch]}
        try:
            response = self._http.post(BATCH_PATH, json=body)
        except httpx.HTTPError as exc:
            return self._failed(f"{self.server_url}{BATCH_PATH}: {type(exc).__name__}: {exc}")
        if response.status_code == 200:
            results = response.json().get("results", [])
            if len(results) != len(batch):
                return self._failed(f"{BATCH_PATH} answered {len(results)} results for "
                                    f"{len(batch)} triggers")
            return ["" if r.get("result") in ("accepted", "duplicate")
                    else f"{r.get('result')}: {r.get('error', '')}" for r in results]
        if response.status_code in (404, 405) and not _server_error(response):
            log.warning("%s has no %s; sending notifications one request each",
                        self.server_url, BATCH_PATH)
            self._batch = False
            return None
        if response.status_code in (400, 413, 422):
            return None  # each trigger gets its own verdict
        return self._failed(f"{BATCH_PATH} answered {response.status_code}: "
                            f"{response.text[:300]}")

    def _post_each(self, batch: list[outbox.OutboxEntry]) -> list[str | None]:
        verdicts: list[str | None] = []
        for entry in batch:
            outcome = self._post(entry)
            if outcome is None:
                verdicts.append("")
                continue
            permanent, error = outcome
            if not permanent:
                verdicts.append(None)
                self._last_failure = error
                break
            verdicts.append(error)
        return verdicts

    def _failed(self, error: str) -> list[str | None]:
        self._last_failure = error
        return [None]

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


def _settled_counts(batch: list[outbox.OutboxEntry], verdicts: list[str]
                    ) -> dict[tuple[str, str], float]:
    """For /metrics: the seed's mangadex_notifications_sent_total{type} (NEW_MANGA, ...) for
    what the server accepted, and notifications_refused_total{kind} for what it refused."""
    counts: dict[tuple[str, str], float] = {}
    for entry, verdict in zip(batch, verdicts, strict=False):
        key = (("notifications_refused_total", metrics.labels_text({"kind": entry.kind}))
               if verdict else
               ("mangadex_notifications_sent_total",
                metrics.labels_text({"type": entry.kind.upper().replace("-", "_")})))
        counts[key] = counts.get(key, 0) + 1
    return counts


def _fitting(entries: list[outbox.OutboxEntry]) -> list[outbox.OutboxEntry]:
    """The longest head of `entries` whose batch body stays under the server's limit."""
    size = 0
    for count, entry in enumerate(entries):
        size += len(json.dumps(entry.payload)) + len(entry.dedup_key) + 64
        if size > MAX_BATCH_BYTES and count:
            return entries[:count]
    return entries


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
