"""What one day partition holds: the per-day figures a range run reports partition by
partition, and the genre links of one day's manga rebuilt on their own."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Column, Connection, Engine, select

from mangasync_pipeline.db.tables import chapters, manga, manga_genres
from mangasync_pipeline.mangadex.client import DEFAULT_INCLUDES, MangaDexClient
from mangasync_pipeline.mangadex.mapping import manga_row
from mangasync_pipeline.sync.catalogue_store import UpsertResult, relink_genres

BY_REQUEST = 100  # ids[] per /manga request


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def _per_day(conn: Connection, column: Column, start: datetime, end: datetime,
             source: object = None) -> Counter[str]:
    stmt = select(column).where(column >= start, column < end)
    if source is not None:
        stmt = stmt.select_from(source)  # type: ignore[arg-type]
    return Counter(_day(moment) for moment in conn.execute(stmt).scalars())


def rows_per_day(engine: Engine, start: datetime, end: datetime) -> dict[str, Counter[str]]:
    """Rows each day partition in [start, end) holds: manga by createdAt, their genre links,
    chapters by readableAt."""
    links = manga_genres.join(manga, manga.c.id == manga_genres.c.manga_id)
    with engine.connect() as conn:
        return {
            "manga": _per_day(conn, manga.c.created_at, start, end),
            "genre_links": _per_day(conn, manga.c.created_at, start, end, links),
            "chapters": _per_day(conn, chapters.c.readable_at, start, end),
        }


def relink_genres_created(engine: Engine, client: MangaDexClient, start: datetime,
                          end: datetime, mangadex_ids: Iterable[str] = ()) -> UpsertResult:
    """Re-read the catalogued manga created in [start, end) (or the ones named) from MangaDex,
    100 per request, and rebuild only their genre links."""
    with engine.connect() as conn:
        ids = sorted(mangadex_ids) or list(conn.execute(
            select(manga.c.mangadex_id).where(manga.c.created_at >= start,
                                              manga.c.created_at < end)
            .order_by(manga.c.created_at, manga.c.id)).scalars())
    result = UpsertResult()
    for i in range(0, len(ids), BY_REQUEST):
        items = client.get_manga_by_ids(ids[i:i + BY_REQUEST], includes=DEFAULT_INCLUDES)
        rows = [manga_row(m, client.uploads_url, client.title_language) for m in items]
        with engine.begin() as conn:
            result.merge(relink_genres(conn, rows))
    return result
