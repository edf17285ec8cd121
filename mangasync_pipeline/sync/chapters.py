"""New-chapter detection whose cost grows with new chapters, not with the catalogue.

MangaDex's global `/chapter` list is read with keyset windows (never each manga's feed), the
chapters of catalogued manga are stored, and NEW_CHAPTER notifications are queued by the rule
of docs/NOTIFICATION-RULES.md, decided by `chapter_rules.decide` for each (manga, language):
a chapter readable after its manga entered the catalogue announces its label when the label
was never stored and its number is above the baseline, or when it has no number.

The baseline is learned the first time a (manga, language) shows activity with nothing
stored, from one feed request: the highest number readable before the manga was catalogued
(`chapter_baselines`). So an empty `lastChapter` never turns history into news.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, case, func, or_, select, update

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db.queries import insert_ignore
from mangasync_pipeline.db.tables import chapter_baselines, chapters, manga
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.mangadex.models import Chapter, Rejection
from mangasync_pipeline.sync import outbox, quarantine, state
from mangasync_pipeline.sync.chapter_reads import (
    EDGE,
    LATE,
    PARKED,
    QUERIES,
    advanced_cursors,
    load_cursors,
    plan_reads,
    read_chapters,
)
from mangasync_pipeline.sync.chapter_rules import PairState, decide, label_key, number_text

log = logging.getLogger("mangasync.chapters")

Pair = tuple[int, str]  # (local manga id, language)

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
    quarantined: int = 0  # records newly quarantined by this run
    retry_requests: int = 0  # quarantined chapters read again by id
    baseline_requests: int = 0
    # `/chapter` requests by read: the edge from the cursor, the late re-read (the lookback)
    # and the parked-link read. A poll costs at least one of them.
    edge_requests: int = 0
    late_requests: int = 0
    parked_requests: int = 0
    notifications: int = 0
    new_numbers: list[str] = field(default_factory=list)
    # Chapters stored per readableAt day (UTC): the new_chapters partitions a run wrote.
    stored_days: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def summary(self) -> dict[str, Any]:
        return {"chapters_seen": self.seen, "chapters_stored": self.stored,
                "already_stored": self.already_stored, "history_not_notified": self.history,
                "skipped_not_catalogued": self.not_catalogued,
                "skipped_other_language": self.other_language,
                "items_skipped_malformed": self.skipped_items,
                "items_quarantined": self.quarantined,
                "quarantine_retry_requests": self.retry_requests,
                "baseline_feed_requests": self.baseline_requests,
                "chapter_requests_edge": self.edge_requests,
                "chapter_requests_late": self.late_requests,
                "chapter_requests_parked": self.parked_requests,
                "notifications_queued": self.notifications,
                "new_numbers": len(self.new_numbers)}

    def add(self, other: ChapterReport) -> None:
        """Add another report's counts and lists to this one's."""
        for name, value in vars(other).items():
            if isinstance(value, int | list):
                setattr(self, name, getattr(self, name) + value)
        for day, n in other.stored_days.items():
            self.stored_days[day] += n


def _manga_info(conn: Connection, mangadex_ids: Iterable[str]) -> dict[str, MangaInfo]:
    ids = sorted(set(mangadex_ids))
    if not ids:
        return {}
    rows = conn.execute(select(manga.c.id, manga.c.mangadex_id, manga.c.title,
                               manga.c.catalogued_at, manga.c.total_chapters)
                        .where(manga.c.mangadex_id.in_(ids))).all()
    return {r.mangadex_id: MangaInfo(r.id, r.mangadex_id, r.title, r.catalogued_at,
                                     r.total_chapters) for r in rows}


def _stored_ids(conn: Connection, candidates: Sequence[Chapter]) -> set[str]:
    """The ids among `candidates` already stored: one query for the whole batch."""
    if not candidates:
        return set()
    return set(conn.execute(select(chapters.c.mangadex_chapter_id).where(
        chapters.c.mangadex_chapter_id.in_(sorted({c.id for c in candidates})))).scalars())


@dataclass
class _Known:
    """Per pair: its baseline row, how many chapters are stored and the top stored history."""

    baseline_rows: dict[Pair, Decimal | None]
    stored_counts: dict[Pair, int]
    stored_history: dict[Pair, Decimal | None]

    def first_sight(self, pairs: Iterable[Pair]) -> set[Pair]:
        """Pairs with neither a baseline row nor a stored chapter: their history is unknown."""
        return {p for p in pairs if p not in self.baseline_rows and not self.stored_counts.get(p)}

    def baseline(self, pair: Pair) -> Decimal | None:
        values = [v for v in (self.baseline_rows.get(pair), self.stored_history.get(pair))
                  if v is not None]
        return max(values) if values else None


def _decimal(value: Any) -> Decimal | None:
    return Decimal(value) if value is not None else None


def _known(conn: Connection, manga_ids: Sequence[int]) -> _Known:
    if not manga_ids:
        return _Known({}, {}, {})
    ids = sorted(set(manga_ids))
    rows = {(m, lang): _decimal(top) for m, lang, top in conn.execute(
        select(chapter_baselines.c.manga_id, chapter_baselines.c.translated_language,
               chapter_baselines.c.max_number).where(chapter_baselines.c.manga_id.in_(ids)))}
    history = case((chapters.c.readable_at < manga.c.catalogued_at, chapters.c.chapter_number))
    counts: dict[Pair, int] = {}
    tops: dict[Pair, Decimal | None] = {}
    for m, lang, n, top in conn.execute(
        select(chapters.c.manga_id, chapters.c.translated_language, func.count(),
               func.max(history))
        .select_from(chapters.join(manga, manga.c.id == chapters.c.manga_id))
        .where(chapters.c.manga_id.in_(ids))
        .group_by(chapters.c.manga_id, chapters.c.translated_language)
    ):
        counts[(m, lang)] = n
        tops[(m, lang)] = _decimal(top)
    return _Known(rows, counts, tops)


def _stored_labels(conn: Connection, fresh: Sequence[Chapter],
                   infos_by_dex: dict[str, MangaInfo]) -> dict[Pair, set[str]]:
    """The labels already stored among the numbers of `fresh`, per pair (one query).

    By number, so that "10.50" finds "10.5", and by text, for labels with more decimals
    than the column keeps."""
    numbers = sorted({c.number for c in fresh if c.number is not None})
    texts = sorted({c.chapter for c in fresh if c.number is not None and c.chapter})
    manga_ids = sorted({infos_by_dex[c.manga_id].id for c in fresh})
    found: dict[Pair, set[str]] = defaultdict(set)
    if not numbers:
        return found
    for m, lang, label in conn.execute(
        select(chapters.c.manga_id, chapters.c.translated_language, chapters.c.label)
        .where(chapters.c.manga_id.in_(manga_ids),
               or_(chapters.c.chapter_number.in_(numbers), chapters.c.label.in_(texts)))
    ):
        key = label_key(label)
        if key is not None:
            found[(m, lang)].add(key)
    return found


# A first sight reads the manga's feed in its default view (`publishAt <= now`), newest
# numbers first. Link-only chapters parked at a far-future publishAt are not in that view;
# real MangaDex parks almost none, so the second view is read only for a manga whose new
# chapters include a link chapter.
BASELINE_VIEWS: tuple[dict[str, int] | None, ...] = (
    None, {"includeExternalUrl": 1, "includeFuturePublishAt": 1})


def _fetch_baselines(client: MangaDexClient, missing: set[Pair], infos: dict[int, MangaInfo],
                     with_links: set[int]) -> tuple[dict[Pair, Decimal | None], int]:
    """Per manga, the top numbers readable before it was catalogued; (values, requests)."""
    by_manga: dict[int, list[str]] = defaultdict(list)
    for m, lang in sorted(missing):
        by_manga[m].append(lang)
    found: dict[Pair, Decimal | None] = {}
    requests = 0
    for m, langs in by_manga.items():
        info = infos[m]
        views = BASELINE_VIEWS if m in with_links else BASELINE_VIEWS[:1]
        items: list[Chapter] = []
        for flags in views:
            items += client.feed_page(info.mangadex_id, tuple(langs),
                                      order={"chapter": "desc"}, limit=500, flags=flags).items
            requests += 1
        for lang in langs:
            numbers = [c.number for c in items
                       if c.translated_language == lang and c.number is not None
                       and c.readable_at < info.catalogued_at]
            found[(m, lang)] = max(numbers) if numbers else None
    return found, requests


def _lock_manga(conn: Connection, manga_ids: Sequence[int]) -> None:
    """Serialise runs deciding about the same manga (SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(manga.c.id).where(manga.c.id.in_(sorted(manga_ids)))
                     .order_by(manga.c.id).with_for_update())


def _pair(c: Chapter, infos_by_dex: dict[str, MangaInfo]) -> Pair:
    return (infos_by_dex[c.manga_id].id, c.translated_language or "")


def process_chapters(engine: Engine, client: MangaDexClient | None, items: Sequence[Chapter],
                     languages: Sequence[str], report: ChapterReport, *,
                     baselines: dict[Pair, Decimal | None] | None = None) -> None:
    """Store chapters and queue what the rules say is new (`chapter_rules.decide`).

    `baselines` is given by a caller that read a whole feed (its history is in `items`);
    otherwise missing baselines are fetched with `client`, outside any transaction. The
    decision itself is made inside the write transaction, with the manga rows locked, so two
    overlapping runs cannot both decide from a stale view. Queries per batch do not depend
    on its size.
    """
    report.seen += len(items)
    unique = list({c.id: c for c in items}.values())
    wanted = [c for c in unique if c.translated_language in languages]
    report.other_language += len(unique) - len(wanted)
    with engine.connect() as conn:
        infos_by_dex = _manga_info(conn, (c.manga_id for c in wanted))
        ours = [c for c in wanted if c.manga_id in infos_by_dex]
        report.not_catalogued += len(wanted) - len(ours)
        stored = _stored_ids(conn, ours)
        fresh = [c for c in ours if c.id not in stored]
        missing = _known(conn, [infos_by_dex[c.manga_id].id for c in fresh]).first_sight(
            _pair(c, infos_by_dex) for c in fresh)
    if not fresh:
        report.already_stored += len(ours)
        return
    infos = {i.id: i for i in infos_by_dex.values()}
    fetched: dict[Pair, Decimal | None] = dict(baselines or {})
    if missing and client is not None and baselines is None:
        with_links = {infos_by_dex[c.manga_id].id for c in fresh if c.external_url}
        values, requests = _fetch_baselines(client, missing, infos, with_links)
        fetched.update(values)
        report.baseline_requests += requests
    now = utcnow()
    with engine.begin() as conn:
        _lock_manga(conn, sorted(infos))
        stored = _stored_ids(conn, ours)
        fresh = [c for c in ours if c.id not in stored]
        report.already_stored += len(ours) - len(fresh)
        by_pair: dict[Pair, list[Chapter]] = defaultdict(list)
        for c in fresh:
            by_pair[_pair(c, infos_by_dex)].append(c)
        known = _known(conn, sorted({m for m, _ in by_pair}))
        missing = known.first_sight(by_pair)
        if missing:
            insert_ignore(conn, chapter_baselines, [
                {"manga_id": m, "translated_language": lang, "max_number": fetched.get((m, lang)),
                 "checked_at": now} for m, lang in sorted(missing)],
                conflict=["manga_id", "translated_language"])
            known.baseline_rows.update({p: fetched.get(p) for p in missing})
        labels = _stored_labels(conn, fresh, infos_by_dex)
        announce: list[Chapter] = []
        for pair, batch in by_pair.items():
            decision = decide(PairState(infos[pair[0]].catalogued_at, known.baseline(pair),
                                        frozenset(labels.get(pair, ()))), batch)
            report.history += decision.history
            announce += decision.announce
        announce.sort(key=lambda c: (c.readable_at, c.created_at, c.id))
        _store(conn, fresh, announce, infos_by_dex, report, now)


def _payload(c: Chapter, info: MangaInfo) -> tuple[str, dict[str, Any]]:
    """The outbox entry of an announcement: one dedup key per label, or per id unnumbered."""
    lang = c.translated_language or ""
    key = label_key(c.chapter) if c.number is not None else None
    dedup = (f"new-chapter:{info.mangadex_id}:{lang}:{key}" if key is not None
             else f"new-chapter:{info.mangadex_id}:{lang}:id:{c.id}")
    payload: dict[str, Any] = {
        "manga_id": info.id, "title": info.title, "language": lang,
        # `chapter` orders ("12a" is 12); `label` is what the reader is shown.
        "chapter": number_text(c.number) if c.number is not None else None,
        "label": c.chapter,
    }
    if c.title:
        payload["chapter_title"] = c.title
    return dedup, payload


def _store(conn: Connection, fresh: list[Chapter], announce: list[Chapter],
           infos_by_dex: dict[str, MangaInfo], report: ChapterReport, now: datetime) -> None:
    notified = {c.id for c in announce}
    rows: list[dict[str, Any]] = []
    top_integer: dict[int, int] = {}
    for c in sorted(fresh, key=lambda c: (c.readable_at, c.created_at, c.id)):
        info = infos_by_dex[c.manga_id]
        if c.number is not None:
            top_integer[info.id] = max(top_integer.get(info.id, 0), math.floor(c.number))
        rows.append({
            "manga_id": info.id, "mangadex_chapter_id": c.id, "chapter_number": c.number,
            "label": c.chapter, "title": c.title, "volume": c.volume, "pages": c.pages,
            "translated_language": c.translated_language or "", "external_url": c.external_url,
            "scanlation_group": c.group_ids[0] if c.group_ids else None,
            "published_at": c.publish_at, "readable_at": c.readable_at,
            "notified": c.id in notified, "created_at": c.created_at, "updated_at": now,
        })
    insert_ignore(conn, chapters, rows, conflict=["mangadex_chapter_id"])
    for c in announce:
        dedup, payload = _payload(c, infos_by_dex[c.manga_id])
        outbox.enqueue(conn, outbox.NEW_CHAPTER, payload, dedup, now)
        log.info("new chapter %s of manga %s (%s) ch %s [%s]: queued", c.id,
                 payload["manga_id"], payload["title"], payload["label"], payload["language"])
    touched = sorted({infos_by_dex[c.manga_id].id for c in fresh})
    conn.execute(update(manga).where(manga.c.id.in_(touched)).values(last_chapter_check=now))
    for manga_id, top_number in top_integer.items():
        conn.execute(update(manga).where(manga.c.id == manga_id).where(
            (manga.c.total_chapters.is_(None)) | (manga.c.total_chapters < top_number))
            .values(total_chapters=top_number))
    report.stored += len(rows)
    for c in fresh:
        report.stored_days[c.readable_at.astimezone(UTC).date().isoformat()] += 1
    report.notifications += len(announce)
    report.new_numbers += [c.chapter or "(no number)" for c in announce]


# --- partitions and the schedule --------------------------------------------------------------

# Chapters are decided in batches of this many, each in its own transaction.
BATCH = 500


def sync_chapter_window(engine: Engine, client: MangaDexClient, languages: Sequence[str],
                        start: datetime, end: datetime, *, lookback: timedelta,
                        use_cursor: bool = True) -> ChapterReport:
    """Materialize chapter partitions [start, end): store and notify, then advance cursors.

    `use_cursor` is for the schedule's polls; backfills pass False and read whole windows.
    """
    report = ChapterReport()
    started = utcnow().replace(microsecond=0)
    reads = plan_reads(load_cursors(engine), start, end, started, lookback,
                       use_cursor=use_cursor)
    state.mark_running(engine, state.CHAPTER_CHECK)
    try:
        client.take_rejections()  # another caller's leftovers on this thread are not ours
        result = read_chapters(client, languages, reads)
        found, report.skipped_items = result.chapters, result.skipped
        report.edge_requests = result.requests[EDGE]
        report.late_requests = result.requests[LATE]
        report.parked_requests = result.requests[PARKED]
        rejected = client.take_rejections()
        found += _read_quarantined(engine, client, languages, found, rejected, report)
        for i in range(0, len(found), BATCH):
            rejected += process_isolated(engine, client, found[i:i + BATCH], languages, report)
        with engine.begin() as conn:
            report.quarantined += quarantine_chapters(conn, found, rejected)
            current = state.get_state(conn, state.CHAPTER_CHECK)
            cursors = advanced_cursors(current["last_cursor"] if current else None, reads)
            state.mark_success(conn, state.CHAPTER_CHECK, status="idle", cursor=cursors,
                               metadata=report.summary())
    except BaseException as exc:  # a run stopped from outside leaves no state "running"
        state.mark_error(engine, state.CHAPTER_CHECK, f"{type(exc).__name__}: {exc}")
        raise
    return report


def process_isolated(engine: Engine, client: MangaDexClient | None, items: Sequence[Chapter],
                     languages: Sequence[str], report: ChapterReport, *,
                     baselines: dict[Pair, Decimal | None] | None = None) -> list[Rejection]:
    """`process_chapters`, but a record whose storing raises costs only itself: the batch is
    stored chapter by chapter and the ones that raise come back as rejections."""

    def store(part: list[Chapter]) -> None:
        attempt = ChapterReport()  # counted only once the part is stored
        process_chapters(engine, client, part, languages, attempt, baselines=baselines)
        report.add(attempt)

    return [Rejection("chapter", c.id, "item", quarantine.reason_of(exc), c.manga_id)
            for c, exc in quarantine.isolate(items, store, "chapters")]


def quarantine_chapters(conn: Connection, read: Sequence[Chapter],
                        rejected: Sequence[Rejection]) -> int:
    """Quarantine the rejected chapters of catalogued manga and release the ones read clean;
    returns how many were not quarantined before."""
    ours = _ours(conn, rejected)
    added = quarantine.record(conn, ours, utcnow())
    for r in ours:
        log.warning("chapter %s of manga %s quarantined: %s", r.mangadex_id, r.parent_id,
                    r.reason)
    quarantine.release(conn, quarantine.CHAPTER,
                       {c.id for c in read} - {r.mangadex_id for r in rejected})
    return added


def _ours(conn: Connection, rejected: Sequence[Rejection]) -> list[Rejection]:
    """The chapter rejections of catalogued manga: other manga's chapters are not ours."""
    chapters_of = {r.parent_id for r in rejected if r.source == "chapter" and r.parent_id}
    if not chapters_of:
        return []
    ours = set(conn.execute(select(manga.c.mangadex_id).where(
        manga.c.mangadex_id.in_(sorted(chapters_of)))).scalars())
    return [r for r in rejected if r.source == "chapter" and r.parent_id in ours]


def _read_quarantined(engine: Engine, client: MangaDexClient, languages: Sequence[str],
                      found: list[Chapter], rejected: list[Rejection],
                      report: ChapterReport) -> list[Chapter]:
    """Quarantined chapters due for another look, read by id (one request per 100; none
    while the quarantine is empty or was read recently). Clean ones come back to be stored;
    ones MangaDex no longer shows are forgotten; refused ones join `rejected` again."""
    now = utcnow()
    with engine.begin() as conn:
        due = quarantine.due(conn, quarantine.CHAPTER, now)
        quarantine.touch(conn, quarantine.CHAPTER, due, now)
    if not due:
        return []
    before = client.stats.snapshot().total_requests
    read: list[Chapter] = []
    seen = {c.id for c in found}
    # The default view first; ids it does not show are asked for again in the view of
    # link-only chapters parked in the future, and forgotten only when neither shows them.
    for flags in (None, QUERIES[PARKED]):
        ask = [i for i in due if i not in seen]
        if not ask:
            break
        read += client.get_chapters_by_ids(ask, languages, flags)
        again = client.take_rejections()
        rejected += again
        seen |= {c.id for c in read} | {r.mangadex_id for r in again}
    report.retry_requests += client.stats.snapshot().total_requests - before
    with engine.begin() as conn:
        quarantine.release(conn, quarantine.CHAPTER, [i for i in due if i not in seen])
    have = {c.id for c in found}
    return [c for c in read if c.id not in have]
