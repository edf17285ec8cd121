"""New-chapter detection whose cost grows with new chapters, not with the catalogue.

MangaDex's global `/chapter` list is read with keyset windows (never each manga's feed), the
chapters of catalogued manga are stored, and NEW_CHAPTER notifications are queued by the rules
of CONTRACTS.md:

- the chapter id was not stored before;
- it became readable after its manga entered the catalogue (history is never new);
- its number is higher than every number known for (manga, language), or it has none.

Known numbers come from stored chapters and, the first time a (manga, language) shows activity
with nothing stored, from one feed request: the highest number readable before the manga was
catalogued (`chapter_baselines`). So an empty `lastChapter` never turns history into news.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.queries import insert_ignore
from mangasync_pipeline.db.tables import chapter_baselines, chapters, manga
from mangasync_pipeline.mangadex.client import ALL_CONTENT_RATINGS, MangaDexClient
from mangasync_pipeline.mangadex.models import Chapter
from mangasync_pipeline.sync import outbox, state

log = logging.getLogger("mangasync.chapters")

Pair = tuple[int, str]  # (local manga id, language)

# The two windows that together see every chapter once it is readable (API-FACTS §3 and §6):
# - by publishAt, with no include* flag, so MangaDex's default `publishAt <= now` applies:
#   regular uploads, and scheduled ones once they are out;
# - by createdAt with includeExternalUrl=1 and includeFuturePublishAt=1: link-only chapters
#   parked at a far-future publishAt, readable from their createdAt, which the first window
#   never returns. Any include* flag drops the default filter, hence both flags set to 1.
QUERIES: dict[str, dict[str, int] | None] = {
    "publishAt": None,
    "createdAt": {"includeExternalUrl": 1, "includeFuturePublishAt": 1},
}


@dataclass
class MangaInfo:
    id: int
    mangadex_id: str
    title: str
    catalogued_at: datetime
    total_chapters: int | None


@dataclass
class ChapterReport:
    seen: int = 0
    stored: int = 0
    already_stored: int = 0
    history: int = 0
    not_catalogued: int = 0
    other_language: int = 0
    skipped_items: int = 0
    baseline_requests: int = 0
    notifications: int = 0
    new_numbers: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"chapters_seen": self.seen, "chapters_stored": self.stored,
                "already_stored": self.already_stored, "history_not_notified": self.history,
                "skipped_not_catalogued": self.not_catalogued,
                "skipped_other_language": self.other_language,
                "items_skipped_malformed": self.skipped_items,
                "baseline_feed_requests": self.baseline_requests,
                "notifications_queued": self.notifications,
                "new_numbers": len(self.new_numbers)}


def number_text(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return text


def _manga_info(conn: Connection, mangadex_ids: Iterable[str]) -> dict[str, MangaInfo]:
    ids = sorted(set(mangadex_ids))
    if not ids:
        return {}
    rows = conn.execute(select(manga.c.id, manga.c.mangadex_id, manga.c.title,
                               manga.c.catalogued_at, manga.c.total_chapters)
                        .where(manga.c.mangadex_id.in_(ids))).all()
    return {r.mangadex_id: MangaInfo(r.id, r.mangadex_id, r.title, r.catalogued_at,
                                     r.total_chapters) for r in rows}


def _known_numbers(conn: Connection, pairs: set[Pair]) -> tuple[dict[Pair, Decimal | None],
                                                                set[Pair]]:
    """Highest known number per pair, and the pairs we know nothing about yet."""
    if not pairs:
        return {}, set()
    manga_ids = sorted({m for m, _ in pairs})
    stored: dict[Pair, Decimal | None] = {}
    counts: dict[Pair, int] = {}
    for m, lang, top, n in conn.execute(
        select(chapters.c.manga_id, chapters.c.translated_language,
               func.max(chapters.c.chapter_number), func.count())
        .where(chapters.c.manga_id.in_(manga_ids))
        .group_by(chapters.c.manga_id, chapters.c.translated_language)
    ):
        stored[(m, lang)] = Decimal(top) if top is not None else None
        counts[(m, lang)] = n
    baselines = {(m, lang): (Decimal(top) if top is not None else None)
                 for m, lang, top in conn.execute(
                     select(chapter_baselines.c.manga_id, chapter_baselines.c.translated_language,
                            chapter_baselines.c.max_number)
                     .where(chapter_baselines.c.manga_id.in_(manga_ids)))}
    known: dict[Pair, Decimal | None] = {}
    missing: set[Pair] = set()
    for pair in pairs:
        values = [v for v in (stored.get(pair), baselines.get(pair)) if v is not None]
        known[pair] = max(values) if values else None
        if pair not in baselines and not counts.get(pair):
            missing.add(pair)
    return known, missing


# Baselines read both halves of a feed: its default view (`publishAt <= now`) and the
# link-only chapters parked at a far-future publishAt, which that view never shows.
BASELINE_VIEWS: tuple[dict[str, int] | None, ...] = (
    None, {"includeExternalUrl": 1, "includeFuturePublishAt": 1})


def _fetch_baselines(client: MangaDexClient, missing: set[Pair],
                     infos: dict[int, MangaInfo]) -> tuple[dict[Pair, Decimal | None], int]:
    """Per manga, the top numbers readable before it was catalogued; (values, requests)."""
    by_manga: dict[int, list[str]] = defaultdict(list)
    for m, lang in missing:
        by_manga[m].append(lang)
    found: dict[Pair, Decimal | None] = {}
    requests = 0
    for m, langs in by_manga.items():
        info = infos[m]
        items: list[Chapter] = []
        for flags in BASELINE_VIEWS:
            items += client.feed_page(info.mangadex_id, tuple(sorted(langs)),
                                      order={"chapter": "desc"}, limit=500, flags=flags).items
            requests += 1
        for lang in langs:
            numbers = [c.number for c in items
                       if c.translated_language == lang and c.number is not None
                       and c.readable_at < info.catalogued_at]
            found[(m, lang)] = max(numbers) if numbers else None
    return found, requests


def _stored_ids(conn: Connection, candidates: Sequence[Chapter]) -> set[str]:
    if not candidates:
        return set()
    return set(conn.execute(select(chapters.c.mangadex_chapter_id).where(
        chapters.c.mangadex_chapter_id.in_([c.id for c in candidates]))).scalars())


def _lock_manga(conn: Connection, manga_ids: Sequence[int]) -> None:
    """Serialise runs deciding about the same manga (SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(manga.c.id).where(manga.c.id.in_(sorted(manga_ids)))
                     .order_by(manga.c.id).with_for_update())


def process_chapters(engine: Engine, client: MangaDexClient | None, items: Sequence[Chapter],
                     languages: Sequence[str], report: ChapterReport, *,
                     baselines: dict[Pair, Decimal | None] | None = None) -> None:
    """Store chapters and queue what the rules say is new.

    `baselines` is given by a caller that read a whole feed (its history is in `items`);
    otherwise missing baselines are fetched with `client`, outside any transaction. The
    decision itself is made inside the write transaction, with the manga rows locked, so two
    overlapping runs cannot both decide from a stale view.
    """
    report.seen += len(items)
    wanted = [c for c in items if c.translated_language in languages]
    report.other_language += len(items) - len(wanted)
    with engine.connect() as conn:
        infos_by_dex = _manga_info(conn, (c.manga_id for c in wanted))
        ours = [c for c in wanted if c.manga_id in infos_by_dex]
        report.not_catalogued += len(wanted) - len(ours)
        fresh = [c for c in ours if c.id not in _stored_ids(conn, ours)]
        pairs = {(infos_by_dex[c.manga_id].id, c.translated_language or "") for c in fresh}
        _, missing = _known_numbers(conn, pairs)
    if not fresh:
        report.already_stored += len(ours)
        return
    infos = {i.id: i for i in infos_by_dex.values()}
    fetched: dict[Pair, Decimal | None] = dict(baselines or {})
    if missing and client is not None and baselines is None:
        values, requests = _fetch_baselines(client, missing, infos)
        fetched.update(values)
        report.baseline_requests += requests
    now = utcnow()
    with engine.begin() as conn:
        _lock_manga(conn, sorted(infos))
        stored = _stored_ids(conn, ours)
        fresh = [c for c in ours if c.id not in stored]
        report.already_stored += len(ours) - len(fresh)
        pairs = {(infos_by_dex[c.manga_id].id, c.translated_language or "") for c in fresh}
        known, missing = _known_numbers(conn, pairs)
        for pair in missing:
            value = fetched.get(pair)
            if value is not None and (known[pair] is None or value > known[pair]):
                known[pair] = value
        if missing:
            insert_ignore(conn, chapter_baselines, [
                {"manga_id": m, "translated_language": lang, "max_number": fetched.get((m, lang)),
                 "checked_at": now} for m, lang in missing],
                conflict=["manga_id", "translated_language"])
        _store(conn, fresh, infos_by_dex, known, report, now)


def _store(conn: Connection, fresh: list[Chapter], infos_by_dex: dict[str, MangaInfo],
           known: dict[Pair, Decimal | None], report: ChapterReport, now: datetime) -> None:
    rows: list[dict[str, Any]] = []
    notices: list[tuple[str, dict[str, Any], str]] = []
    top_integer: dict[int, int] = {}
    running = dict(known)
    # Oldest first, so that of several groups' uploads of a number the first one announces it.
    for c in sorted(fresh, key=lambda c: (c.readable_at, c.created_at, c.id)):
        info = infos_by_dex[c.manga_id]
        lang = c.translated_language or ""
        pair = (info.id, lang)
        top = running[pair]
        notify = False
        if c.readable_at < info.catalogued_at:
            report.history += 1
        elif c.number is None or top is None or c.number > top:
            notify = True
        if c.number is not None:
            if top is None or c.number > top:
                running[pair] = c.number
            top_integer[info.id] = max(top_integer.get(info.id, 0), math.floor(c.number))
        rows.append({
            "manga_id": info.id, "mangadex_chapter_id": c.id, "chapter_number": c.number,
            "label": c.chapter, "title": c.title, "volume": c.volume, "pages": c.pages,
            "translated_language": lang, "external_url": c.external_url,
            "scanlation_group": c.group_ids[0] if c.group_ids else None,
            "published_at": c.publish_at, "readable_at": c.readable_at, "notified": notify,
            "created_at": c.created_at, "updated_at": now,
        })
        if notify:
            label = number_text(c.number) if c.number is not None else None
            key = (f"new-chapter:{info.mangadex_id}:{lang}:{label}" if label is not None
                   else f"new-chapter:{info.mangadex_id}:{lang}:id:{c.id}")
            payload: dict[str, Any] = {"manga_id": info.id, "title": info.title,
                                       "chapter": label, "language": lang}
            if c.title:
                payload["chapter_title"] = c.title
            notices.append((key, payload, c.id))
    insert_ignore(conn, chapters, rows, conflict=["mangadex_chapter_id"])
    for key, payload, chapter_id in notices:
        outbox.enqueue(conn, outbox.NEW_CHAPTER, payload, key, now)
        log.info("new chapter %s of manga %s (%s) ch %s [%s]: queued", chapter_id,
                 payload["manga_id"], payload["title"], payload["chapter"], payload["language"])
    touched = sorted({infos_by_dex[c.manga_id].id for c in fresh})
    conn.execute(update(manga).where(manga.c.id.in_(touched)).values(last_chapter_check=now))
    for manga_id, top_number in top_integer.items():
        conn.execute(update(manga).where(manga.c.id == manga_id).where(
            (manga.c.total_chapters.is_(None)) | (manga.c.total_chapters < top_number))
            .values(total_chapters=top_number))
    report.stored += len(rows)
    report.notifications += len(notices)
    report.new_numbers += [p["chapter"] or "(no number)" for _, p, _ in notices]


# --- partitions and the schedule --------------------------------------------------------------

# Chapters are decided in batches of this many, each in its own transaction.
BATCH = 500


def load_cursors(engine: Engine) -> dict[str, datetime]:
    with engine.connect() as conn:
        row = state.get_state(conn, state.CHAPTER_CHECK)
    return _decode_cursors(row["last_cursor"] if row else None)


def _decode_cursors(raw: str | None) -> dict[str, datetime]:
    if not raw:
        return {}
    try:
        return {k: datetime.fromisoformat(v) for k, v in json.loads(raw).items()}
    except (ValueError, AttributeError):
        log.warning("chapter_check cursor %r unreadable: reading whole partitions", raw)
        return {}


def window_starts(cursors: dict[str, datetime], start: datetime, end: datetime,
                  lookback: timedelta, *, use_cursor: bool = True) -> dict[str, datetime]:
    """Where each query starts.

    A scheduled poll resumes at its cursor minus the lookback, even before the partition's
    start, so a chapter stamped 23:50 that shows up after midnight is still read. Any other
    run (a backfill, a manual materialization) reads its whole window.
    """
    starts = {}
    for key in QUERIES:
        cursor = cursors.get(key)
        if use_cursor and cursor is not None and start - lookback <= cursor < end:
            starts[key] = cursor - lookback
        else:
            starts[key] = start
    return starts


def _day_slices(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) cut at UTC midnights: both queries of a slice are sorted together."""
    while start < end:
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        stop = min(end, midnight + timedelta(days=1))
        yield start, stop
        start = stop


def read_slice(client: MangaDexClient, languages: Sequence[str], starts: dict[str, datetime],
               slice_start: datetime, slice_end: datetime,
               report: ChapterReport) -> list[Chapter]:
    """Both queries over one slice, merged by id and ordered by when each became readable."""
    found: dict[str, Chapter] = {}
    for key, flags in QUERIES.items():
        since = max(starts[key], slice_start)
        if since >= slice_end:
            continue
        # Every rating: a catalogued manga is ours whatever its rating (ids[] and single reads
        # bring them all), and chapters of manga we do not have are dropped anyway.
        for page in client.iter_chapter_pages(key, since=since, until=slice_end,  # type: ignore[arg-type]
                                              languages=tuple(languages), flags=flags,
                                              content_ratings=ALL_CONTENT_RATINGS):
            report.skipped_items += page.skipped
            for chapter in page.items:
                found.setdefault(chapter.id, chapter)
    return sorted(found.values(), key=lambda c: (c.readable_at, c.created_at, c.id))


def sync_chapter_window(engine: Engine, client: MangaDexClient, languages: Sequence[str],
                        start: datetime, end: datetime, *, lookback: timedelta,
                        use_cursor: bool = True) -> ChapterReport:
    """Materialize chapter partitions [start, end): store and notify, then advance cursors.

    `use_cursor` is for the schedule's polls; backfills pass False and read whole days.
    """
    report = ChapterReport()
    started = utcnow().replace(microsecond=0)
    starts = window_starts(load_cursors(engine), start, end, lookback, use_cursor=use_cursor)
    state.mark_running(engine, state.CHAPTER_CHECK)
    try:
        # Nothing is readable after now; slices starting beyond now plus a clock-skew allowance
        # (the lookback) would cost two empty requests each.
        for slice_start, slice_end in _day_slices(min(starts.values()), end):
            if slice_start > started + lookback:
                break
            found = read_slice(client, languages, starts, slice_start, slice_end, report)
            for i in range(0, len(found), BATCH):
                process_chapters(engine, client, found[i:i + BATCH], languages, report)
        # Everything readable before `started` has been read: that is the cursor, whatever
        # the timestamps of what came back (a link-only chapter's publishAt is years ahead).
        done_to = min(end, started)
        with engine.begin() as conn:
            current = state.get_state(conn, state.CHAPTER_CHECK)
            merged = _decode_cursors(current["last_cursor"] if current else None)
            for key in QUERIES:
                if key not in merged or done_to > merged[key]:
                    merged[key] = done_to
            state.mark_success(conn, state.CHAPTER_CHECK, status="idle",
                               cursor=json.dumps({k: v.isoformat() for k, v in merged.items()}),
                               metadata=report.summary())
    except Exception as exc:
        state.mark_error(engine, state.CHAPTER_CHECK, f"{type(exc).__name__}: {exc}")
        raise
    return report
