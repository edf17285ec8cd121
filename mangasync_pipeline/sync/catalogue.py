"""Catalogue sync as plain functions: partitions by createdAt, initial sync, change detection.

Dagster calls these from thin assets, sensors and jobs (`defs/`); tests call them directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from mangasync_pipeline.bounds import CLOCK_SKEW
from mangasync_pipeline.config import DEFAULT_CONTENT_RATINGS, utcnow
from mangasync_pipeline.db.tables import manga
from mangasync_pipeline.mangadex.client import DEFAULT_INCLUDES, MangaDexClient
from mangasync_pipeline.mangadex.mapping import MangaRow, manga_row
from mangasync_pipeline.mangadex.models import Manga, Rejection
from mangasync_pipeline.sync import quarantine, state
from mangasync_pipeline.sync.catalogue_store import NotifyPolicy, UpsertResult, upsert_manga

log = logging.getLogger("mangasync.catalogue")

Progress = Callable[[str], None]
PREVIEW = 10  # titles a report keeps for the UI
# Called after each stored page with the report so far and how far the pass has read.
PageHook = Callable[["CatalogueReport", datetime], None]
Ratings = Sequence[str]


@dataclass
class CatalogueReport:
    """What one catalogue run did, in figures a person can read in the Dagster UI.

    Counts, not rows: a whole-catalogue mirror reads 90,000 manga, and keeping a tuple for
    each would cost the run tens of megabytes for a preview of ten titles."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    genre_links_added: int = 0
    genre_links_removed: int = 0
    genres_created: int = 0
    notifications: int = 0
    pages: int = 0
    seen: int = 0
    skipped_items: int = 0
    quarantined: int = 0  # records newly quarantined by this run
    titles: list[str] = field(default_factory=list)  # the first inserted or updated ones
    # The first inserted or updated manga, (local id, MangaDex id, title, "inserted"/"updated").
    changes: list[tuple[int, str, str, str]] = field(default_factory=list)
    # Per createdAt day (the partition): manga read, inserted and updated.
    days: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    inserted_days: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    updated_days: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, result: UpsertResult, items: Iterable[Manga], skipped: int = 0) -> None:
        self.inserted += len(result.inserted)
        self.updated += len(result.updated)
        self.unchanged += result.unchanged
        self.genre_links_added += result.genre_links_added
        self.genre_links_removed += result.genre_links_removed
        self.genres_created += result.genres_created
        self.notifications += result.notifications
        if len(self.titles) < PREVIEW:
            self.titles += [t for _, _, t in result.inserted + result.updated][
                :PREVIEW - len(self.titles)]
        if len(self.changes) < PREVIEW:
            self.changes += [(*row, "inserted") for row in result.inserted][:PREVIEW]
            self.changes += [(*row, "updated") for row in result.updated][
                :PREVIEW - len(self.changes)]
        self.pages += 1
        self.skipped_items += skipped
        day_of: dict[str, str] = {}
        for item in items:
            self.seen += 1
            day_of[item.id] = item.created_at.date().isoformat()
            self.days[day_of[item.id]] += 1
        for _, dex, _ in result.inserted:
            if dex in day_of:
                self.inserted_days[day_of[dex]] += 1
        for _, dex, _ in result.updated:
            if dex in day_of:
                self.updated_days[day_of[dex]] += 1

    def preview(self, n: int = PREVIEW) -> list[str]:
        return self.titles[:n]

    def summary(self) -> dict[str, Any]:
        return {"manga_seen": self.seen, "manga_inserted": self.inserted,
                "manga_updated": self.updated, "manga_unchanged": self.unchanged,
                "genre_links_added": self.genre_links_added,
                "genre_links_removed": self.genre_links_removed,
                "genres_created": self.genres_created, "notifications_queued": self.notifications,
                "items_skipped_malformed": self.skipped_items,
                "items_quarantined": self.quarantined, "pages": self.pages}


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _store_page(engine: Engine, client: MangaDexClient, items: list[Manga],
                policy: NotifyPolicy, report: CatalogueReport, skipped: int = 0) -> None:
    """Store a page in one transaction. Should one record make it raise, every record is
    stored on its own and the ones that raise are quarantined: the page goes on without them.
    The page's records the checks refused are quarantined, the stored ones released."""
    rejected = [r for r in client.take_rejections() if r.source == "manga"]
    rows = []
    for item in items:
        try:
            rows.append(manga_row(item, client.uploads_url, client.title_language))
        except Exception as exc:
            if not quarantine.is_record_error(exc):
                raise
            rejected.append(Rejection("manga", item.id, "item", quarantine.reason_of(exc)))
    result = UpsertResult()

    def store(part: list[MangaRow]) -> None:
        with engine.begin() as conn:
            result.merge(upsert_manga(conn, part, utcnow(), policy))
            quarantine.release(conn, quarantine.MANGA, (r.mangadex_id for r in part))

    rejected += [Rejection("manga", row.mangadex_id, "item", quarantine.reason_of(exc))
                 for row, exc in quarantine.isolate(rows, store, "manga")]
    if rejected:
        with engine.begin() as conn:
            report.quarantined += quarantine.record(conn, rejected, utcnow())
        for r in rejected:
            log.warning("manga %s quarantined: %s", r.mangadex_id, r.reason)
    failed = {r.mangadex_id for r in rejected}
    items = [m for m in items if m.id not in failed]
    report.add(result, items, skipped)
    if engine.dialect.name == "postgresql" and report.pages in (10, 100, 1000):
        # A table that grew within this run has no statistics yet, and PostgreSQL's planner
        # then scans it for every page's id lookups: a 50,000-manga import ran 4x slower.
        with engine.begin() as conn:
            conn.execute(text("ANALYZE manga, manga_genres, genres"))
    for local_id, mangadex_id, title in result.inserted:
        log.debug("manga %s (%s) catalogued: %s", local_id, mangadex_id, title)


SILENT = NotifyPolicy(new_manga=False, updates=True)


def import_created_range(engine: Engine, client: MangaDexClient, start: datetime,
                         end: datetime, *, policy: NotifyPolicy = SILENT,
                         content_ratings: Ratings = DEFAULT_CONTENT_RATINGS,
                         progress: Progress | None = None,
                         on_page: PageHook | None = None) -> CatalogueReport:
    """Every manga of `content_ratings` created on MangaDex in [start, end): one keyset pass
    however many days the range holds, one transaction per page."""
    report = CatalogueReport()
    for page in client.iter_manga_pages("createdAt", since=start, until=end,
                                        includes=DEFAULT_INCLUDES,
                                        content_ratings=content_ratings):
        _store_page(engine, client, page.items, policy, report, page.skipped)
        upto = page.items[-1].created_at if page.items else start
        if progress:
            progress(f"{report.seen} manga read ({report.inserted} new) "
                     f"up to {upto.isoformat()}")
        if on_page:
            on_page(report, upto)
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
                 force: bool = False,
                 content_ratings: Ratings = DEFAULT_CONTENT_RATINGS) -> InitialSyncReport:
    """Import the newest `limit` manga once; notifies no one."""
    with engine.connect() as conn:
        current = state.get_state(conn, state.INITIAL_SYNC)
    if current and current["status"] == "completed" and not force:
        log.info("initial sync already completed at %s (cursor %s); pass force to run again",
                 current["last_success_at"], current["last_cursor"])
        return InitialSyncReport(True, CatalogueReport(), initial_sync_cursor(engine))
    state.mark_running(engine, state.INITIAL_SYNC)
    try:
        items = client.newest_manga(limit, includes=DEFAULT_INCLUDES,
                                    content_ratings=content_ratings)
        report = CatalogueReport()
        no_one = NotifyPolicy(new_manga=False, updates=False)
        for i in range(0, len(items), 100):
            _store_page(engine, client, items[i:i + 100], no_one, report)
        cursor = max((m.created_at for m in items), default=None)
        with engine.begin() as conn:
            state.mark_success(conn, state.INITIAL_SYNC,
                               cursor=cursor.isoformat() if cursor else None,
                               metadata=report.summary())
    except BaseException as exc:  # a run stopped from outside leaves no state "running"
        state.mark_error(engine, state.INITIAL_SYNC, f"{type(exc).__name__}: {exc}")
        raise
    log.info("initial sync imported %d manga (%d new), cursor %s", report.seen,
             report.inserted, cursor)
    return InitialSyncReport(False, report, cursor)


# --- change detection (new manga and updates), used by new_manga_sensor --------------------

# Each scan starts this far before its cursor: a manga that becomes visible a little after its
# updatedAt (edge caches, moderation) is still seen. What was handled is recognised in the
# database, so re-reading costs a few items, not decisions.
SCAN_LOOKBACK = timedelta(minutes=10)


@dataclass(frozen=True)
class PollCursor:
    """Where detection stands: the newest `updatedAt` handled, and from when a manga counts
    as new (the initial sync's cursor, or the first scan's start)."""

    since: datetime
    new_after: datetime

    def encode(self) -> str:
        return json.dumps({"since": self.since.isoformat(),
                           "new_after": self.new_after.isoformat()})

    @classmethod
    def decode(cls, raw: str | None) -> PollCursor | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            since = datetime.fromisoformat(data["since"])
            return cls(since, datetime.fromisoformat(data.get("new_after") or data["since"]))
        except (ValueError, KeyError, TypeError):
            log.warning("new-manga cursor %r unreadable: starting afresh", raw)
            return None


@dataclass
class Detection:
    """What a scan found: new manga by createdAt day partition, and changed catalogued manga."""

    new_by_day: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    updated: list[str] = field(default_factory=list)
    # (id, updatedAt) of everything handed on: two detections of one manga differ by it.
    versions: dict[str, datetime] = field(default_factory=dict)
    cursor: PollCursor | None = None
    seen: int = 0
    truncated: bool = False

    def digest(self, ids: Iterable[str]) -> str:
        text = ",".join(f"{i}@{self.versions[i].isoformat()}" for i in sorted(ids))
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def start_cursor(engine: Engine, now: datetime) -> PollCursor:
    """Where detection starts with no cursor: the initial sync's, else one hour ago."""
    since = (initial_sync_cursor(engine) or (now - timedelta(hours=1))).replace(microsecond=0)
    return PollCursor(since, since)


def detect_changes(engine: Engine, client: MangaDexClient, cursor: PollCursor, *,
                   max_pages: int = 10,
                   content_ratings: Ratings = DEFAULT_CONTENT_RATINGS) -> Detection:
    """One `updatedAtSince` keyset scan finds both kinds of work.

    A manga we do not have, created from `new_after` on, is new (its updatedAt is at least its
    createdAt); a catalogued manga with a newer updatedAt than stored has changed. Everything
    else MangaDex updated is none of our business.
    """
    now = utcnow()
    if cursor.since > now + CLOCK_SKEW:
        # Stored by an earlier version from a record stamped in the future: start again
        # from now rather than wait for that date.
        log.warning("new-manga cursor %s is in the future: scanning from now",
                    cursor.since.isoformat())
        cursor = PollCursor(now.replace(microsecond=0), min(cursor.new_after, now))
    detection = Detection(cursor=cursor)
    newest = cursor.since
    client.take_rejections()  # another caller's leftovers on this thread are not this scan's
    pages = client.iter_manga_pages("updatedAt", since=cursor.since - SCAN_LOOKBACK, includes=(),
                                    content_ratings=content_ratings)
    for n, page in enumerate(pages):
        if page.items:
            _classify(engine, page.items, cursor, detection)
            detection.seen += len(page.items)
            # Never past what was read, nor past now plus the skew: one record stamped in
            # year 9999 is quarantined by the checks, and this is the second line behind them.
            newest = min(max(newest, *(m.updated_at for m in page.items)), now + CLOCK_SKEW)
        if n + 1 >= max_pages:
            detection.truncated = True
            break
    detection.cursor = PollCursor(newest, cursor.new_after)
    _retry_quarantined(engine, client, cursor, detection, now)
    return detection


def _classify(engine: Engine, items: list[Manga], cursor: PollCursor,
              detection: Detection) -> list[Manga]:
    """File read manga as new or updated; returns the ones that are neither."""
    with engine.connect() as conn:
        known = dict(conn.execute(
            select(manga.c.mangadex_id, manga.c.mangadex_updated_at).where(
                manga.c.mangadex_id.in_([m.id for m in items]))).all())
    idle = []
    for item in items:
        if item.id in known:
            stored = known[item.id]
            if stored is None or item.updated_at > stored:
                detection.updated.append(item.id)
                detection.versions[item.id] = item.updated_at
                continue
        elif item.created_at >= cursor.new_after:
            detection.new_by_day[item.created_at.date().isoformat()].append(item.id)
            detection.versions[item.id] = item.updated_at
            continue
        idle.append(item)
    return idle


def _ours(conn: Connection, rejected: list[Rejection], cursor: PollCursor) -> list[Rejection]:
    """The scan's refused manga that are ours: catalogued ones, and ones that would be new
    (or whose createdAt could not be read). Other manga MangaDex updated are not our business,
    odd or not."""
    manga_rejected = [r for r in rejected if r.source == "manga"]
    if not manga_rejected:
        return []
    known = set(conn.execute(select(manga.c.mangadex_id).where(
        manga.c.mangadex_id.in_([r.mangadex_id for r in manga_rejected]))).scalars())
    return [r for r in manga_rejected if r.mangadex_id in known or r.created_at is None
            or r.created_at >= cursor.new_after]


def _retry_quarantined(engine: Engine, client: MangaDexClient, cursor: PollCursor,
                       detection: Detection, now: datetime) -> None:
    """Quarantine what the scan refused; read quarantined manga again once they are due (one
    request per 100, none while the quarantine is empty or recently read). A manga MangaDex
    fixed reads clean and is handed on like any other; one it removed is forgotten."""
    with engine.begin() as conn:
        quarantine.record(conn, _ours(conn, client.take_rejections(), cursor), now)
        due = quarantine.due(conn, quarantine.MANGA, now)
        if due:
            quarantine.touch(conn, quarantine.MANGA, due, now)
    if not due:
        return
    handed = set(detection.versions)
    found = [m for m in client.get_manga_by_ids(due, includes=()) if m.id not in handed]
    idle = _classify(engine, found, cursor, detection) if found else []
    still_bad = client.take_rejections()
    read = {m.id for m in found} | {r.mangadex_id for r in still_bad} | handed
    with engine.begin() as conn:
        quarantine.record(conn, still_bad, now)
        # Read clean with nothing to do (stored already), or gone from MangaDex.
        quarantine.release(conn, quarantine.MANGA,
                           [m.id for m in idle] + [i for i in due if i not in read])
