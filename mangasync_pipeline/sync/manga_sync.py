"""Re-read one manga and its whole feed: `sync_manga_job` (which is also what the notification
server's `POST /api/manga/{id}/sync` requests) and `mangasync sync-manga`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, or_, select, update

from mangasync_pipeline.config import Settings, utcnow
from mangasync_pipeline.db.engine import shared_engine
from mangasync_pipeline.db.tables import manga, manual_sync_requests
from mangasync_pipeline.ids import is_uuid
from mangasync_pipeline.mangadex.client import DEFAULT_INCLUDES, MangaDexClient, open_client
from mangasync_pipeline.mangadex.dates import as_utc
from mangasync_pipeline.mangadex.mapping import manga_row
from mangasync_pipeline.sync.catalogue_store import NotifyPolicy, upsert_manga
from mangasync_pipeline.sync.chapters import (
    BASELINE_VIEWS,
    ChapterReport,
    process_isolated,
    quarantine_chapters,
)
from mangasync_pipeline.sync.notifier import Notifier


def resolve_mangadex_id(engine: Engine, manga_ref: str) -> str:
    """A local id, a slug or a MangaDex UUID -> the MangaDex UUID (LookupError if unknown)."""
    ref = manga_ref.strip()
    if is_uuid(ref):
        return ref.lower()
    conditions = [manga.c.slug == ref]
    if ref.isdigit():
        conditions.append(manga.c.id == int(ref))
    with engine.connect() as conn:
        found = conn.execute(select(manga.c.mangadex_id).where(or_(*conditions))).scalar()
    if found is None:
        raise LookupError(f"no manga {ref!r} in the catalogue (give a local id, a slug or a "
                          "MangaDex UUID)")
    return found


class OutsideRatings(LookupError):
    """The manga's content rating is not one MANGASYNC_CONTENT_RATINGS lets in."""


def rating_refusal(mangadex_id: str, rating: str | None, allowed: Sequence[str]) -> str | None:
    """Why a manga of `rating` may not be synced, or None when it may."""
    if rating in allowed:
        return None
    return (f"manga {mangadex_id} is rated {rating or 'without a rating'!r}, outside "
            f"MANGASYNC_CONTENT_RATINGS ({', '.join(allowed)}): not synced")


def refuse_requests(engine: Engine, request_ids: Sequence[int], reason: str) -> None:
    """Close manual sync requests as refused, with the reason `GET /api/sync-requests/{id}`
    shows."""
    if request_ids:
        r = manual_sync_requests
        with engine.begin() as conn:
            conn.execute(update(r).where(r.c.id.in_(list(request_ids)))
                         .values(status="refused", error=reason[:2000], updated_at=utcnow()))


def sync_one(engine: Engine, client: MangaDexClient, mangadex_id: str,
             languages: Sequence[str],
             content_ratings: Sequence[str] | None = None) -> dict[str, Any]:
    """Upsert the manga (never a NEW_MANGA), then apply the chapter rules to its full feed.

    With `content_ratings`, a manga rated otherwise raises `OutsideRatings` before anything
    is stored."""
    before = client.stats.snapshot()
    item = client.get_manga(mangadex_id, includes=DEFAULT_INCLUDES)
    if content_ratings is not None:
        refusal = rating_refusal(mangadex_id, item.content_rating, content_ratings)
        if refusal:
            raise OutsideRatings(refusal)
    with engine.begin() as conn:
        row = manga_row(item, client.uploads_url, client.title_language)
        upsert = upsert_manga(conn, [row], utcnow(),
                              NotifyPolicy(new_manga=False, updates=True))
    report = ChapterReport()
    client.take_rejections()  # another caller's leftovers on this thread are not ours
    feed = [c for flags in BASELINE_VIEWS
            for page in client.iter_feed_pages(mangadex_id, tuple(languages), flags=flags)
            for c in page.items]
    rejected = client.take_rejections()
    # The whole feed is at hand, so history before cataloguing is the baseline: no extra request.
    rejected += process_isolated(engine, client, feed, languages, report, baselines={})
    with engine.begin() as conn:
        report.quarantined += quarantine_chapters(conn, feed, rejected)
    spent = client.stats.snapshot() - before
    with engine.connect() as conn:
        row = conn.execute(select(manga.c.id, manga.c.slug, manga.c.title,
                                  manga.c.total_chapters, manga.c.created_at)
                           .where(manga.c.mangadex_id == mangadex_id)).one()
    return {
        "manga_id": row.id, "mangadex_id": mangadex_id, "slug": row.slug, "title": row.title,
        "total_chapters": row.total_chapters,
        "catalogue": "inserted" if upsert.inserted else ("updated" if upsert.updated
                                                         else "unchanged"),
        "chapters_in_feed": report.seen, "chapters_stored": report.stored,
        "already_stored": report.already_stored, "new_chapters": report.new_numbers,
        "chapters_quarantined": report.quarantined,
        "notifications_queued": report.notifications + upsert.notifications,
        "requests": spent.total_requests,
        # The partitions it wrote: the manga's createdAt day, and chapters per readableAt day.
        "catalogue_day": as_utc(row.created_at).date().isoformat(),
        "chapter_days": dict(sorted(report.stored_days.items())),
    }


def sync_manga(settings: Settings, manga_ref: str) -> dict[str, Any]:
    """The per-manga sync for callers outside Dagster (`mangasync sync-manga`): sync, then
    hand over what it queued."""
    engine = shared_engine(settings.database_url)
    mangadex_id = resolve_mangadex_id(engine, manga_ref)
    with open_client(settings) as client:
        found = sync_one(engine, client, mangadex_id, settings.languages,
                         settings.content_ratings)
    with Notifier(settings.udp_server_url, settings.notify_trigger_token) as notifier:
        delivery = notifier.deliver(engine)
    found["notifications_delivered"] = delivery.delivered
    found["notifications_pending"] = delivery.pending
    if delivery.errors:
        found["delivery_error"] = delivery.errors[0]
    return found
