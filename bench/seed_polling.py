"""The seed design's new-chapter detection, kept here only as the benchmark's comparison.

Every poll it takes the next `batch_size` catalogued manga in a round-robin (by local id),
reads each one's feed (one request per manga: the newest chapters, MangaDex's default page
of 100) and calls a chapter new when its number is above `manga.total_chapters`, the count
MangaDex's `lastChapter` gave the catalogue (empty `lastChapter`: nothing, so every number
counts). Chapters it has already seen are remembered in memory so each is judged once.

`SeedPoller.poll(at)` runs one poll as it would have run at the instant `at`: chapters that
became readable at or after `at` did not exist yet and are ignored, which lets a benchmark
replay a timeline without waiting for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, select

from mangasync_pipeline.db.tables import manga
from mangasync_pipeline.mangadex.client import MangaDexClient

FEED_LIMIT = 100  # MangaDex's default feed page


@dataclass(frozen=True)
class Catalogued:
    mangadex_id: str
    total_chapters: int | None
    catalogued_at: datetime


@dataclass
class SeedPoll:
    """What one poll did: requests spent and the chapters it saw for the first time."""

    at: datetime
    requests: int = 0
    first_seen: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    history_notified: int = 0


class SeedPoller:
    def __init__(self, engine: Engine, client: MangaDexClient, *,
                 languages: Sequence[str] = ("en",), batch_size: int = 50) -> None:
        self.client = client
        self.languages = tuple(languages)
        self.batch_size = batch_size
        with engine.connect() as conn:
            self.catalogue = [Catalogued(r.mangadex_id, r.total_chapters, r.catalogued_at)
                              for r in conn.execute(select(
                                  manga.c.mangadex_id, manga.c.total_chapters,
                                  manga.c.catalogued_at).order_by(manga.c.id))]
        self.position = {m.mangadex_id: i for i, m in enumerate(self.catalogue)}
        self.next_index = 0
        self.polls = 0
        self.seen: set[str] = set()

    def batch(self, poll_number: int) -> list[int]:
        """Catalogue positions the `poll_number`-th poll (0-based) checks."""
        size = len(self.catalogue)
        first = poll_number * self.batch_size
        return [(first + i) % size for i in range(min(self.batch_size, size))]

    def poll(self, at: datetime) -> SeedPoll:
        report = SeedPoll(at)
        for index in self.batch(self.polls):
            item = self.catalogue[index]
            page = self.client.feed_page(item.mangadex_id, self.languages,
                                         order={"chapter": "desc"}, limit=FEED_LIMIT)
            report.requests += 1
            total = item.total_chapters or 0
            for chapter in page.items:
                if chapter.readable_at >= at or chapter.id in self.seen:
                    continue
                self.seen.add(chapter.id)
                report.first_seen.append(chapter.id)
                if chapter.number is not None and chapter.number > total:
                    report.notified.append(chapter.id)
                    if chapter.readable_at < item.catalogued_at:
                        report.history_notified += 1
        self.polls += 1
        return report

    def first_check_after(self, mangadex_id: str, poll_times: Sequence[datetime],
                          readable_at: datetime) -> int | None:
        """Index of the first poll in `poll_times` (the poller's own schedule, extended as
        far as needed) whose batch holds the manga and that runs after `readable_at`."""
        position = self.position[mangadex_id]
        for k, at in enumerate(poll_times):
            if at > readable_at and position in self.batch(k):
                return k
        return None
