"""Whether chapters of catalogued manga became readable since a cursor, in two requests.

The chapter sensor asks this every tick and launches a `new_chapters` run only when the answer
is yes, so a quiet half minute costs two requests and no run. It reads the same two windows as
the chapter sync (`chapter_reads.QUERIES`): by publishAt under MangaDex's default "readable now"
filter, and by createdAt for link-only chapters parked at a far-future publishAt. One page of
each; what it finds is compared with the database, never decided about (the run does that).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, select

from mangasync_pipeline.bounds import CLOCK_SKEW
from mangasync_pipeline.db.tables import chapters, manga
from mangasync_pipeline.mangadex.client import ALL_CONTENT_RATINGS, MangaDexClient
from mangasync_pipeline.mangadex.dates import to_second
from mangasync_pipeline.mangadex.models import Chapter, Page
from mangasync_pipeline.sync.chapter_reads import QUERIES

log = logging.getLogger("mangasync.chapter_probe")

# Each probe re-reads this much before its cursor: a chapter that shows up in MangaDex's lists
# a little after its timestamp (caches, clock skew) is still seen. Stored ones cost nothing.
OVERLAP = timedelta(minutes=2)


@dataclass(frozen=True)
class ProbeCursor:
    """Where each query reads from next."""

    since: dict[str, datetime]

    @classmethod
    def starting_at(cls, when: datetime) -> ProbeCursor:
        return cls({key: when for key in QUERIES})

    def encode(self) -> str:
        return json.dumps({k: v.isoformat() for k, v in sorted(self.since.items())})

    @classmethod
    def decode(cls, raw: str | None) -> ProbeCursor | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            since = {key: datetime.fromisoformat(data[key]) for key in QUERIES}
        except (ValueError, KeyError, TypeError):
            log.warning("chapter sensor cursor %r unreadable: starting afresh", raw)
            return None
        return cls(since)

    @property
    def earliest(self) -> datetime:
        return min(self.since.values())


@dataclass
class Probe:
    """What one probe saw: readable chapters of catalogued manga not stored yet."""

    new: list[Chapter] = field(default_factory=list)
    seen: int = 0
    requests: int = 0
    cursor: ProbeCursor | None = None

    def windows(self, first_day: date) -> dict[str, tuple[datetime, int]]:
        """Day partition -> (the instant its run must read from, new chapters in it)."""
        starts: dict[str, tuple[datetime, int]] = {}
        for c in self.new:
            # A regular chapter is read by its publishAt, a link-only one by its createdAt:
            # from the earlier of the two, both queries of the run include it.
            at = min(c.readable_at, c.created_at).replace(microsecond=0)
            day = max(c.readable_at.date(), first_day).isoformat()
            since, n = starts.get(day, (at, 0))
            starts[day] = (min(since, at), n + 1)
        return starts

    def ids(self) -> list[str]:
        return sorted(c.id for c in self.new)


def probe_new_chapters(engine: Engine, client: MangaDexClient, languages: Sequence[str],
                       cursor: ProbeCursor, now: datetime, *,
                       hold_until: timedelta = timedelta(hours=1)) -> Probe:
    """One page of each chapter query from the cursor (less the overlap): which readable
    chapters, in `languages`, of manga the catalogue holds, are not in `chapters` yet.

    The next cursor does not pass a new chapter: until a run stores it, every probe sees it
    again (so a failed run is followed by another), for at most `hold_until`."""
    probe = Probe()
    found: dict[str, Chapter] = {}
    advanced: dict[str, datetime] = {}
    for key, flags in QUERIES.items():
        since = cursor.since[key]
        before = client.stats.snapshot().total_requests
        pages = client.iter_chapter_pages(key, since=since - OVERLAP,  # type: ignore[arg-type]
                                          languages=tuple(languages), flags=flags,
                                          content_ratings=ALL_CONTENT_RATINGS)
        try:
            page = next(pages)
            items = list(page.items)
            # A page that holds one second only (more than a page of chapters share it) would
            # be read again by the next tick, and the one after: read on through that second
            # (MangaDex's keyset, up to its 10,000-result window). Any other page costs one
            # request, as before.
            while _more(page) and len({to_second(getattr(c, _ATTR[key])) for c in items}) < 2:
                page = next(pages, None)
                if page is None:
                    break
                items += page.items
        finally:
            pages.close()  # the rest of the window is the run's business
        probe.requests += client.stats.snapshot().total_requests - before
        probe.seen += len(items)
        for c in items:
            if c.readable_at <= now:  # a scheduled chapter is the publishAt query's, later
                found.setdefault(c.id, c)
        if page is not None and _more(page) and items:
            # More than a page since the cursor: step through, a page a tick, no overlap.
            advanced[key] = max(getattr(c, _ATTR[key]) for c in items) + OVERLAP
        else:
            advanced[key] = max(since, now)
        # Never past now plus the skew, whatever a record says.
        advanced[key] = min(advanced[key], now + CLOCK_SKEW)
    client.take_rejections()  # what the checks refused is the run's to quarantine
    probe.new = _not_stored_of_catalogued(engine, list(found.values()), languages)
    if probe.new:
        floor = now - hold_until
        for key in advanced:
            oldest = min(getattr(c, _ATTR[key]) for c in probe.new)
            advanced[key] = min(advanced[key], max(oldest.replace(microsecond=0), floor)
                                + OVERLAP)
    probe.cursor = ProbeCursor(advanced)
    return probe


_ATTR = {"publishAt": "publish_at", "createdAt": "created_at"}


def _more(page: Page[Chapter]) -> bool:
    return page.total > page.offset + page.limit


def _not_stored_of_catalogued(engine: Engine, items: list[Chapter],
                              languages: Sequence[str]) -> list[Chapter]:
    items = [c for c in items if c.translated_language in languages]
    if not items:
        return []
    with engine.connect() as conn:
        ours = set(conn.execute(select(manga.c.mangadex_id).where(
            manga.c.mangadex_id.in_(sorted({c.manga_id for c in items})))).scalars())
        candidates = [c for c in items if c.manga_id in ours]
        if not candidates:
            return []
        stored = set(conn.execute(select(chapters.c.mangadex_chapter_id).where(
            chapters.c.mangadex_chapter_id.in_([c.id for c in candidates]))).scalars())
    return sorted((c for c in candidates if c.id not in stored),
                  key=lambda c: (c.readable_at, c.id))
