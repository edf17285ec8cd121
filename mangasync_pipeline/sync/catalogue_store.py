"""Writes MangaDex manga into MangaHub: `manga`, `genres`, `manga_genres`, and the outbox.

One call handles one page (at most a few hundred rows) inside the caller's transaction, in a
fixed number of statements whatever the page size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, tuple_, update

from mangasync_pipeline.bounds import SLUG_LEN
from mangasync_pipeline.db.queries import insert_ignore
from mangasync_pipeline.db.tables import genres, manga, manga_genres
from mangasync_pipeline.mangadex.mapping import MangaRow
from mangasync_pipeline.sync import outbox

# Columns refreshed from MangaDex on every upsert, compared to decide "changed".
SYNCED_COLUMNS = ("title", "author", "status", "content_rating", "total_chapters",
                  "description", "cover_url", "created_at", "mangadex_updated_at")


@dataclass(frozen=True)
class NotifyPolicy:
    """Who hears about what this upsert finds."""

    new_manga: bool = False
    # NEW_MANGA only for manga created on MangaDex from this instant on (the initial sync's
    # cursor); manga that sync imported are not new to the upsert, so ties are safe.
    new_manga_after: datetime | None = None
    updates: bool = True


@dataclass
class UpsertResult:
    inserted: list[tuple[int, str, str]] = field(default_factory=list)  # (id, mangadex_id, title)
    updated: list[tuple[int, str, str]] = field(default_factory=list)
    unchanged: int = 0
    genre_links_added: int = 0
    genre_links_removed: int = 0
    genres_created: int = 0
    notifications: int = 0

    def merge(self, other: UpsertResult) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.genre_links_added += other.genre_links_added
        self.genre_links_removed += other.genre_links_removed
        self.genres_created += other.genres_created
        self.notifications += other.notifications


def upsert_manga(conn: Connection, rows: Sequence[MangaRow], now: datetime,
                 policy: NotifyPolicy = NotifyPolicy()) -> UpsertResult:
    result = UpsertResult()
    rows = list({row.mangadex_id: row for row in rows}.values())  # last copy of an id wins
    if not rows:
        return result
    existing = _existing(conn, [r.mangadex_id for r in rows])
    new_rows = [r for r in rows if r.mangadex_id not in existing]
    ids = {dex_id: row["id"] for dex_id, row in existing.items()}
    ids.update(_insert_new(conn, new_rows, now))

    changed: list[dict[str, Any]] = []
    for row in rows:
        local_id = ids[row.mangadex_id]
        if row.mangadex_id not in existing:
            result.inserted.append((local_id, row.mangadex_id, row.title))
            if policy.new_manga and (policy.new_manga_after is None
                                     or row.created_at >= policy.new_manga_after):
                outbox.enqueue(conn, outbox.NEW_MANGA, {"manga_id": local_id, "title": row.title},
                               f"new-manga:{row.mangadex_id}", now)
                result.notifications += 1
            continue
        old = existing[row.mangadex_id]
        values = _synced_values(row, old)
        if all(values[c] == old[c] for c in SYNCED_COLUMNS):
            result.unchanged += 1
            continue
        changed.append({"b_id": local_id, **values})
        result.updated.append((local_id, row.mangadex_id, row.title))
        message = _update_message(old, row)
        if policy.updates and message:
            outbox.enqueue(conn, outbox.MANGA_UPDATE,
                           {"manga_id": local_id, "title": row.title, "message": message},
                           f"manga-update:{row.mangadex_id}:{row.mangadex_updated_at.isoformat()}",
                           now)
            result.notifications += 1
    if changed:
        conn.execute(
            update(manga).where(manga.c.id == bindparam("b_id"))
            .values({**{c: bindparam(c) for c in SYNCED_COLUMNS}, "last_synced_at": now,
                     "updated_at": now}),
            changed,
        )
    untouched = [ids[r.mangadex_id] for r in rows
                 if r.mangadex_id in existing and ids[r.mangadex_id] not in
                 {c["b_id"] for c in changed}]
    if untouched:
        conn.execute(update(manga).where(manga.c.id.in_(untouched)).values(last_synced_at=now))
    _link_genres(conn, rows, ids, result)
    return result


def _existing(conn: Connection, mangadex_ids: list[str]) -> dict[str, dict[str, Any]]:
    found = conn.execute(
        select(manga.c.id, manga.c.mangadex_id, *[manga.c[c] for c in SYNCED_COLUMNS])
        .where(manga.c.mangadex_id.in_(mangadex_ids))
    ).all()
    return {r.mangadex_id: dict(r._mapping) for r in found}


def _ids(conn: Connection, mangadex_ids: list[str]) -> dict[str, int]:
    found = conn.execute(select(manga.c.mangadex_id, manga.c.id)
                         .where(manga.c.mangadex_id.in_(mangadex_ids))).all()
    return {r.mangadex_id: r.id for r in found}


def _synced_values(row: MangaRow, old: dict[str, Any] | None = None) -> dict[str, Any]:
    total = row.total_chapters
    # Chapters we store can know more than `lastChapter`; never move the count backwards.
    if old is not None and old["total_chapters"] is not None and (
            total is None or total < old["total_chapters"]):
        total = old["total_chapters"]
    return {"title": row.title, "author": row.author, "status": row.status,
            "content_rating": row.content_rating, "total_chapters": total,
            "description": row.description, "cover_url": row.cover_url,
            "created_at": row.created_at, "mangadex_updated_at": row.mangadex_updated_at}


def _update_message(old: dict[str, Any], row: MangaRow) -> str | None:
    parts = []
    if old["status"] != row.status and row.status:
        parts.append(f"Status: {row.status}")
    # A title that changed only because MANGASYNC_TITLE_LANGUAGE picks another of the manga's
    # titles is stored silently: readers hear about renames on MangaDex, not about settings.
    if old["title"] != row.title and old["title"] not in row.title_choices:
        parts.append(f"Title: {row.title} (was {old['title']})")
    return "; ".join(parts) or None


def _insert_new(conn: Connection, rows: list[MangaRow], now: datetime) -> dict[str, int]:
    """Insert with unique slugs (a slug taken meanwhile by another run gets the id suffix);
    returns the local ids of `rows`."""
    # MangaDex timestamps are whole seconds: a chapter of the same second is not history.
    catalogued_at = now.replace(microsecond=0)
    pending = rows
    ids: dict[str, int] = {}
    for attempt in range(3):
        if not pending:
            return ids
        slugs = _choose_slugs(conn, pending, attempt)
        insert_ignore(conn, manga, [
            {"mangadex_id": r.mangadex_id, "slug": slugs[r.mangadex_id], **_synced_values(r),
             "catalogued_at": catalogued_at, "last_synced_at": now, "updated_at": now}
            for r in pending
        ])
        # Rows another run inserted meanwhile are found here too: their ids are just as good.
        ids.update(_ids(conn, [r.mangadex_id for r in pending]))
        pending = [r for r in pending if r.mangadex_id not in ids]
    if pending:
        raise RuntimeError(f"could not give manga {pending[0].mangadex_id} a unique slug")


def _choose_slugs(conn: Connection, rows: list[MangaRow], attempt: int) -> dict[str, str]:
    def candidates(row: MangaRow) -> list[str]:
        base = row.slug_base[:80]
        suffix = row.mangadex_id.replace("-", "")
        # The full id suffix is 33 characters: its base is cut so the slug fits its column.
        return [base, f"{base}-{suffix[:8]}", f"{base}-{suffix[:16]}",
                f"{base[:SLUG_LEN - 33].rstrip('-')}-{suffix}"][attempt:]

    wanted = {c for r in rows for c in candidates(r)}
    taken = set(conn.execute(select(manga.c.slug).where(manga.c.slug.in_(wanted))).scalars())
    chosen: dict[str, str] = {}
    for row in rows:
        for cand in candidates(row):
            if cand not in taken:
                chosen[row.mangadex_id] = cand
                taken.add(cand)
                break
        else:
            chosen[row.mangadex_id] = f"{row.slug_base[:40]}-{row.mangadex_id}"
    return chosen


def _link_genres(conn: Connection, rows: list[MangaRow], ids: dict[str, int],
                 result: UpsertResult) -> None:
    names = sorted({g for r in rows for g in r.genres})
    genre_ids: dict[str, int] = {}
    if names:
        known = dict(conn.execute(select(genres.c.name, genres.c.id)
                                  .where(genres.c.name.in_(names))).all())
        missing = [n for n in names if n not in known]
        if missing:
            insert_ignore(conn, genres, [{"name": n} for n in missing], conflict=["name"])
            known = dict(conn.execute(select(genres.c.name, genres.c.id)
                                      .where(genres.c.name.in_(names))).all())
            result.genres_created += len(missing)
        genre_ids = known
    wanted = {(ids[r.mangadex_id], genre_ids[g]) for r in rows for g in r.genres}
    manga_ids = [ids[r.mangadex_id] for r in rows]
    have = set(conn.execute(select(manga_genres.c.manga_id, manga_genres.c.genre_id)
                            .where(manga_genres.c.manga_id.in_(manga_ids))).all())
    add = sorted(wanted - have)
    remove = sorted(have - wanted)
    if add:
        insert_ignore(conn, manga_genres, [{"manga_id": m, "genre_id": g} for m, g in add])
        result.genre_links_added += len(add)
    if remove:
        conn.execute(delete(manga_genres).where(
            tuple_(manga_genres.c.manga_id, manga_genres.c.genre_id).in_(remove)))
        result.genre_links_removed += len(remove)


def relink_genres(conn: Connection, rows: Sequence[MangaRow]) -> UpsertResult:
    """Only the genre links of `rows` already catalogued; the manga rows stay as they are."""
    result = UpsertResult()
    ids = _ids(conn, [r.mangadex_id for r in rows])
    known = [r for r in rows if r.mangadex_id in ids]
    if known:
        _link_genres(conn, known, ids, result)
    return result
