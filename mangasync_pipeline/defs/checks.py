"""Asset checks that catch real breakage in what the assets wrote."""



from dagster import AssetCheckResult, AssetCheckSeverity, asset_check
from sqlalchemy import and_, func, select

from mangasync_pipeline.db.tables import chapters, genres, manga, manga_genres
from mangasync_pipeline.defs.assets import GENRE_LINKS, MANGA_CATALOGUE, NEW_CHAPTERS
from mangasync_pipeline.defs.reporting import table
from mangasync_pipeline.defs.resources import MangaHub, MangaHubDatabase
from mangasync_pipeline.sync import quarantine


def _count(mangahub: MangaHubDatabase, stmt: object) -> int:
    with mangahub.engine().connect() as conn:
        return int(conn.execute(stmt).scalar() or 0)  # type: ignore[call-overload]


@asset_check(asset=MANGA_CATALOGUE, description="Every manga has a title and a slug.")
def manga_have_titles_and_slugs(mangahub: MangaHub) -> AssetCheckResult:
    bad = _count(mangahub, select(func.count()).select_from(manga).where(
        (func.trim(manga.c.title) == "") | (func.trim(manga.c.slug) == "")))
    total = _count(mangahub, select(func.count()).select_from(manga))
    return AssetCheckResult(passed=bad == 0, metadata={"manga": total, "without_title": bad})


@asset_check(asset=GENRE_LINKS, description="Every genre link points at an existing manga "
             "and genre.")
def genre_links_point_at_rows(mangahub: MangaHub) -> AssetCheckResult:
    dangling = _count(mangahub, select(func.count()).select_from(
        manga_genres.outerjoin(manga, manga.c.id == manga_genres.c.manga_id)
        .outerjoin(genres, genres.c.id == manga_genres.c.genre_id))
        .where((manga.c.id.is_(None)) | (genres.c.id.is_(None))))
    return AssetCheckResult(passed=dangling == 0, metadata={"dangling_links": dangling})


@asset_check(asset=NEW_CHAPTERS, description="No chapter belongs to a manga outside the "
             "catalogue.")
def chapters_of_catalogued_manga(mangahub: MangaHub) -> AssetCheckResult:
    orphans = _count(mangahub, select(func.count()).select_from(
        chapters.outerjoin(manga, manga.c.id == chapters.c.manga_id))
        .where(manga.c.id.is_(None)))
    return AssetCheckResult(passed=orphans == 0, metadata={"orphan_chapters": orphans})


@asset_check(asset=NEW_CHAPTERS, description="total_chapters is never below the highest "
             "stored whole chapter number.")
def total_chapters_not_below_stored(mangahub: MangaHub) -> AssetCheckResult:
    top = (select(chapters.c.manga_id, func.max(chapters.c.chapter_number).label("top"))
           .group_by(chapters.c.manga_id).subquery())
    behind = _count(mangahub, select(func.count()).select_from(
        manga.join(top, top.c.manga_id == manga.c.id)).where(
        and_(top.c.top.is_not(None), (manga.c.total_chapters.is_(None))
             | (manga.c.total_chapters < func.floor(top.c.top)))))
    return AssetCheckResult(passed=behind == 0, metadata={"manga_behind": behind})


@asset_check(asset=NEW_CHAPTERS, description="At most one NEW_CHAPTER per manga, language and "
             "chapter label.")
def one_notification_per_chapter_number(mangahub: MangaHub) -> AssetCheckResult:
    # Per label, not per number: "12" and "12a" are two chapters, each announced once.
    dupes = (select(chapters.c.manga_id).where(chapters.c.notified.is_(True),
                                               chapters.c.chapter_number.is_not(None))
             .group_by(chapters.c.manga_id, chapters.c.translated_language, chapters.c.label)
             .having(func.count() > 1).subquery())
    n = _count(mangahub, select(func.count()).select_from(dupes))
    return AssetCheckResult(passed=n == 0, metadata={"duplicate_numbers": n})


def _quarantine(mangahub: MangaHubDatabase, source: str) -> AssetCheckResult:
    with mangahub.engine().connect() as conn:
        n = quarantine.counts(conn).get(source, 0)
        shown = [r for r in quarantine.listing(conn, 50) if r.source == source][:10]
    rows = [{"mangadex_id": r.mangadex_id, "field": r.field, "reason": r.reason,
             "first_seen": r.first_seen.isoformat(timespec="seconds"),
             "last_seen": r.last_seen.isoformat(timespec="seconds")} for r in shown]
    return AssetCheckResult(
        passed=n == 0, severity=AssetCheckSeverity.WARN,
        metadata={"quarantined": n, "latest": table(rows, {
            "mangadex_id": "string", "field": "string", "reason": "string",
            "first_seen": "string", "last_seen": "string"})})


@asset_check(asset=MANGA_CATALOGUE, description="No MangaDex manga is quarantined (skipped "
             "by the boundary checks; read again every 15 minutes until it passes).")
def no_quarantined_manga(mangahub: MangaHub) -> AssetCheckResult:
    return _quarantine(mangahub, quarantine.MANGA)


@asset_check(asset=NEW_CHAPTERS, description="No chapter of a catalogued manga is quarantined "
             "(skipped by the boundary checks; read again every 15 minutes until it passes).")
def no_quarantined_chapters(mangahub: MangaHub) -> AssetCheckResult:
    return _quarantine(mangahub, quarantine.CHAPTER)
