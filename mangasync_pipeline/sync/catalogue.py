"""Catalogue sync as plain functions: partitions by createdAt, initial sync, change detection.

Dagster calls these from thin assets, sensors and jobs (`defs/`); tests call them directly.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.tables import manga
from mangasync_pipeline.mangadex.client import DEFAULT_INCLUDES, MangaDexClient
from mangasync_pipeline.mangadex.mapping import manga_row
from mangasync_pipeline.mangadex.models import Manga
from mangasync_pipeline.sync import state
from mangasync_pipeline.sync.catalogue_store import NotifyPolicy, UpsertResult, upsert_manga

log = logging.getLogger("mangasync.catalogue")

Progress = Callable[[str], None]


@dataclass
class CatalogueReport:
    """What one catalogue run did, in figures a person can read in the Dagster UI."""

    result: UpsertResult = field(default_factory=UpsertResult)
    pages: int = 0
    seen: int = 0
    skipped_items: int = 0
    days: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, result: UpsertResult, items: Iterable[Manga], skipped: int = 0) -> None:
        self.result.merge(result)
        self.pages += 1
        self.skipped_items += skipped
        for item in items:
            self.seen += 1
            self.days[item.created_at.date().isoformat()] += 1

    def preview(self, n: int = 10) -> list[str]:
        return [title for _, _, title in (self.result.inserted + self.result.updated)[:n]]

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {"manga_seen": self.seen, "manga_inserted": len(r.inserted),
                "manga_updated": len(r.updated), "manga_unchanged": r.unchanged,
                "genre_links_added": r.genre_links_added,
                "genre_links_removed": r.genre_links_removed,
                "genres_created": r.genres_created, "notifications_queued": r.notifications,
                "items_skipped_malformed": self.skipped_items, "pages": self.pages}


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _store_page(engine: Engine, client: MangaDexClient, items: list[Manga],
                policy: NotifyPolicy, report: CatalogueReport, skipped: int = 0) -> None:
    rows = [manga_row(m, client.uploads_url) for m in items]
    with engine.begin() as conn:
        result = upsert_manga(conn, rows, utcnow(), policy)
    report.add(result, items, skipped)
    for local_id, mangadex_id, title in result.inserted:
        log.debug("manga %s (%s) catalogued: %s", local_id, mangadex_id, title)


SILENT = NotifyPolicy(new_manga=False, updates=True)


def import_created_range(engine: Engine, client: MangaDexClient, start: datetime,
                         end: datetime, *, policy: NotifyPolicy = SILENT,
                         progress: Progress | None = None) -> CatalogueReport:
    """Every manga created on MangaDex in [start, end): keyset pages, one transaction each."""
    report = CatalogueReport()
    for page in client.iter_manga_pages("createdAt", since=start, until=end,
                                        includes=DEFAULT_INCLUDES):
        _store_page(engine, client, page.items, policy, report, page.skipped)
        if progress:
            progress(f"{report.seen} manga read ({len(report.result.inserted)} new) "
                     f"up to {page.items[-1].created_at.isoformat() if page.items else start}")
    return report


def import_ids(engine: Engine, client: MangaDexClient, mangadex_ids: list[str], *,
               policy: NotifyPolicy) -> CatalogueReport:
    """Re-read the given manga (100 per request) and upsert them."""
    report = CatalogueReport()
    items = client.get_manga_by_ids(mangadex_ids, includes=DEFAULT_INCLUDES)
    for i in range(0, len(items), 100):
        _store_page(engine, client, items[i:i + 100], policy, report)
    return report


def initial_sync_cursor(engine: Engine) -> datetime | None:
    with engine.connect() as conn:
        row = state.get_state(conn, state.INITIAL_SYNC)
    if not row or row["status"] != "completed" or not row["last_cursor"]:
        return None
    return datetime.fromisoformat(row["last_cursor"])


@dataclass
class InitialSyncReport:
    skipped: bool
    catalogue: CatalogueReport
    cursor: datetime | None


def initial_sync(engine: Engine, client: MangaDexClient, limit: int, *,
                 force: bool = False) -> InitialSyncReport:
    """Import the newest `limit` manga once; notifies no one."""
    with engine.connect() as conn:
        current = state.get_state(conn, state.INITIAL_SYNC)
    if current and current["status"] == "completed" and not force:
        log.info("initial sync already completed at %s (cursor %s); pass force to run again",
                 current["last_success_at"], current["last_cursor"])
        return InitialSyncReport(True, CatalogueReport(), initial_sync_cursor(engine))
    state.mark_running(engine, state.INITIAL_SYNC)
    try:
        items = client.newest_manga(limit, includes=DEFAULT_INCLUDES)
        report = CatalogueReport()
        no_one = NotifyPolicy(new_manga=False, updates=False)
        for i in range(0, len(items), 100):
            _store_page(engine, client, items[i:i + 100], no_one, report)
        cursor = max((m.created_at for m in items), default=None)
        with engine.begin() as conn:
            state.mark_success(conn, state.INITIAL_SYNC,
                               cursor=cursor.isoformat() if cursor else None,
                               metadata=report.summary())
    except Exception as exc:
        state.mark_error(engine, state.INITIAL_SYNC, f"{type(exc).__name__}: {exc}")
        raise
    log.info("initial sync imported %d manga (%d new), cursor %s", report.seen,
             len(report.result.inserted), cursor)
    return InitialSyncReport(False, report, cursor)


# --- change detection (new manga and updates), used by new_manga_sensor --------------------


@dataclass(frozen=True)
class PollCursor:
    """Keyset position on MangaDex `updatedAt`: the instant and the ids seen at it."""

    since: datetime
    seen_ids: tuple[str, ...] = ()

    def encode(self) -> str:
        return json.dumps({"since": self.since.isoformat(), "ids": list(self.seen_ids)})

    @classmethod
    def decode(cls, raw: str | None) -> PollCursor | None:
        if not raw:
            return None
        data = json.loads(raw)
        return cls(datetime.fromisoformat(data["since"]), tuple(data.get("ids", ())))


@dataclass
class Detection:
    """Manga to hand to catalogue runs, grouped by their createdAt day partition."""

    new_by_day: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    updated_by_day: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    cursor: PollCursor | None = None
    seen: int = 0
    truncated: bool = False

    @property
    def days(self) -> list[str]:
        return sorted(set(self.new_by_day) | set(self.updated_by_day))


def start_cursor(engine: Engine, now: datetime) -> PollCursor:
    """Where detection starts with no cursor: the initial sync's, else one hour ago."""
    since = initial_sync_cursor(engine) or (now - timedelta(hours=1))
    return PollCursor(since.replace(microsecond=0))


def detect_changes(engine: Engine, client: MangaDexClient, cursor: PollCursor, *,
                   max_pages: int = 10) -> Detection:
    """One `updatedAtSince` keyset scan finds both kinds of work.

    A manga created after the cursor is new (its updatedAt >= createdAt); a catalogued manga
    updated after it may have changed. Everything else MangaDex updated is none of our business.
    The cursor only moves past manga that were put in the detection.
    """
    detection = Detection(cursor=cursor)
    skip = set(cursor.seen_ids)
    last: PollCursor = cursor
    pages = client.iter_manga_pages("updatedAt", since=cursor.since, includes=())
    for n, page in enumerate(pages):
        # Ids at the cursor's instant were handled; the same id updated again is news.
        items = [m for m in page.items if not (m.id in skip and m.updated_at == cursor.since)]
        if items:
            with engine.connect() as conn:
                known = dict(conn.execute(
                    select(manga.c.mangadex_id, manga.c.mangadex_updated_at).where(
                        manga.c.mangadex_id.in_([m.id for m in items]))).all())
            for item in items:
                day = item.created_at.date().isoformat()
                if item.id in known:
                    stored = known[item.id]
                    if stored is None or item.updated_at > stored:
                        detection.updated_by_day[day].append(item.id)
                elif item.created_at >= cursor.since:
                    detection.new_by_day[day].append(item.id)
            detection.seen += len(items)
            newest = max(m.updated_at for m in items)
            at_newest = {m.id for m in items if m.updated_at == newest}
            if newest == last.since:
                at_newest |= set(last.seen_ids)
            last = PollCursor(newest, tuple(sorted(at_newest)))
        if n + 1 >= max_pages:
            detection.truncated = True
            break
    detection.cursor = last
    return detection
