"""Where each poll reads MangaDex's global `/chapter` list, and the reading itself.

Cursors live in `sync_state` (`chapter_check`). The edge is read on every poll from where the
last one stopped; the late re-read and the parked-link read run once per step, whatever the
poll interval, so their cost per hour does not depend on it (docs/NOTIFICATION-RULES.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from mangasync_pipeline.mangadex.client import ALL_CONTENT_RATINGS, MangaDexClient
from mangasync_pipeline.mangadex.models import Chapter, Page
from mangasync_pipeline.sync import state

log = logging.getLogger("mangasync.chapters")

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


def load_cursors(engine: Engine) -> dict[str, datetime]:
    with engine.connect() as conn:
        row = state.get_state(conn, state.CHAPTER_CHECK)
    return decode_cursors(row["last_cursor"] if row else None)


def decode_cursors(raw: str | None) -> dict[str, datetime]:
    if not raw:
        return {}
    try:
        return {k: datetime.fromisoformat(v) for k, v in json.loads(raw).items()}
    except (ValueError, AttributeError):
        log.warning("chapter_check cursor %r unreadable: reading whole partitions", raw)
        return {}


@dataclass(frozen=True)
class Read:
    """One keyset read of `/chapter`: `query` over [since, until); `cursor` names the stage."""

    cursor: str
    query: str
    since: datetime
    until: datetime
    done_to: datetime  # the stage's cursor once the read succeeded


def advanced_cursors(raw: str | None, reads: Sequence[Read]) -> str:
    """The stored cursors moved forward by the reads that succeeded (never backwards: an
    overlapping run may have gone further)."""
    merged = decode_cursors(raw)
    for read in reads:
        if read.cursor not in merged or read.done_to > merged[read.cursor]:
            merged[read.cursor] = read.done_to
    return json.dumps({k: v.isoformat() for k, v in merged.items()})


# Cursor names. The publishAt edge is read on every poll from where the last one stopped (no
# lookback, so a poll costs what arrived since the last one). Chapters that show up in the
# list after the edge passed their timestamp are caught by the late stage, which re-reads
# each stretch of time once, when it is `lookback` old, in steps of at least `step`: its cost
# per hour is the same at 1-minute and at 15-minute polls. Link-only chapters parked at a
# far-future publishAt are rare: their query (by createdAt) runs once per step and reads back
# the whole lookback each time.
EDGE, LATE, PARKED = "publishAt", "publishAt@late", "createdAt"


def late_step(lookback: timedelta) -> timedelta:
    return max(lookback / 4, timedelta(minutes=1))


def plan_reads(cursors: dict[str, datetime], start: datetime, end: datetime,
               started: datetime, lookback: timedelta, *, use_cursor: bool = True
               ) -> list[Read]:
    """The reads of one run of partitions [start, end), at `started`.

    A scheduled poll resumes at its cursors, even before the partition's start (a chapter
    stamped 23:50 that shows up after midnight is still read). A backfill, a manual
    materialization or a cursor from days ago reads the whole window.
    """
    upto = min(end, started)
    # Reads extend to `end`, not to `upto`: MangaDex's clock may be ahead of ours, and
    # nothing is returned beyond its now anyway. A window wholly in the future is skipped.
    if start > started + lookback:
        return []
    if not use_cursor:
        return [Read(key, key, start, end, upto) for key in (EDGE, PARKED)]

    def valid(key: str) -> datetime | None:
        cursor = cursors.get(key)
        return cursor if cursor is not None and start - 2 * lookback <= cursor < end else None

    step = late_step(lookback) * 0.9  # polls drift by seconds: a step of 14:59 is a step
    reads = []
    late, settled = valid(LATE), upto - lookback
    # The late read comes first: when it reaches the end of the list, the edge is read too.
    if late is None:
        # No late cursor, or one from before an outage: everything before `settled` is read
        # now, already lookback old. An empty read moves the cursor there.
        reads.append(Read(LATE, EDGE, settled, settled, settled))
    elif settled - late >= step:
        reads.append(Read(LATE, EDGE, late, settled, settled))
    reads.append(Read(EDGE, EDGE, valid(EDGE) or start, end, upto))
    parked = valid(PARKED)
    if parked is None or upto - parked >= step:
        since = parked - lookback if parked is not None else start
        reads.append(Read(PARKED, PARKED, since, end, upto))
    return reads


def _pages(client: MangaDexClient, languages: Sequence[str], query: str, since: datetime,
           until: datetime | None) -> Iterator[Page[Chapter]]:
    # Every rating: a catalogued manga is ours whatever its rating (ids[] and single reads
    # bring them all), and chapters of manga we do not have are dropped anyway.
    return client.iter_chapter_pages(query, since=since, until=until,  # type: ignore[arg-type]
                                     languages=tuple(languages), flags=QUERIES[query],
                                     content_ratings=ALL_CONTENT_RATINGS)


@dataclass
class ReadResult:
    """What one poll's reads found, and what they cost."""

    chapters: list[Chapter]
    skipped: int  # items skipped as malformed
    # Requests (pages) per stage: EDGE, LATE and PARKED. An edge read that the late re-read
    # made unnecessary (it reached the end of the list) costs nothing here: that poll's one
    # unavoidable request is then the late read's first page.
    requests: dict[str, int]


def _read_late(client: MangaDexClient, languages: Sequence[str], read: Read,
               edge_until: datetime, found: dict[str, Chapter], result: ReadResult) -> bool:
    """The late re-read, not cut at its end: it stops at the first page past `read.until`,
    or at the end of the list. True when it reached the end: then everything the edge read
    would return (up to `edge_until`) is already in `found`, so with little traffic the
    re-read and the edge cost one request together."""
    for page in _pages(client, languages, read.query, read.since, None):
        result.requests[LATE] += 1
        result.skipped += page.skipped
        for chapter in page.items:
            if chapter.publish_at < edge_until:
                found.setdefault(chapter.id, chapter)
        if page.total <= page.offset + page.limit:
            return True
        if page.items and page.items[-1].publish_at >= read.until:
            return False
    return True


def read_chapters(client: MangaDexClient, languages: Sequence[str], reads: Sequence[Read]
                  ) -> ReadResult:
    """Every read, merged by id (the decision does not depend on their order)."""
    found: dict[str, Chapter] = {}
    result = ReadResult([], 0, {EDGE: 0, LATE: 0, PARKED: 0})
    edge_until = max((r.until for r in reads if r.cursor == EDGE), default=None)
    edge_covered = False
    for read in reads:
        if read.since >= read.until or (read.cursor == EDGE and edge_covered):
            continue
        if read.cursor == LATE and edge_until is not None:
            edge_covered = _read_late(client, languages, read, edge_until, found, result)
            continue
        for page in _pages(client, languages, read.query, read.since, read.until):
            result.requests[read.cursor] += 1
            result.skipped += page.skipped
            for chapter in page.items:
                found.setdefault(chapter.id, chapter)
    result.chapters = list(found.values())
    return result


