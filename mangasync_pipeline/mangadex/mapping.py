"""MangaDex objects -> MangaHub rows (the `manga` table's columns, plus genre names)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from mangasync_pipeline.mangadex.models import Manga, parse_chapter_number, pick_localized
from mangasync_pipeline.mangadex.sanitize import slugify

DEFAULT_UPLOADS_URL = "https://uploads.mangadex.org"


@dataclass(frozen=True, slots=True)
class MangaRow:
    mangadex_id: str
    title: str
    author: str | None
    status: str | None
    total_chapters: int | None
    description: str | None
    cover_url: str | None
    genres: tuple[str, ...]
    slug_base: str
    created_at: datetime
    mangadex_updated_at: datetime
    # Every title a title-language preference could pick for this manga: a stored title
    # among them that differs from `title` changed by preference, not on MangaDex.
    title_choices: tuple[str, ...] = ()
    content_rating: str | None = None


def manga_title(manga: Manga, language: str | None = None) -> str:
    """English title, else the first available, else an English alt title.

    With a `language` (MANGASYNC_TITLE_LANGUAGE), a romanised main title ("ja-ro", "ko-ro")
    gives way to the first alternative title in that language: "Na Honjaman Level-Up" is
    shown as "Solo Leveling".
    """
    if language and any(key.endswith("-ro") for key in manga.title):
        preferred = [text for lang, text in manga.alt_titles if lang == language and text]
        if preferred:
            return preferred[0]
    title = pick_localized(manga.title)
    if title:
        return title
    alts = [text for lang, text in manga.alt_titles if lang == "en"]
    alts = alts or [text for _, text in manga.alt_titles]
    if alts:
        return alts[0]
    return f"Untitled manga {manga.id[:8]}"


def manga_author(manga: Manga) -> str | None:
    """Author names joined with ", "; None when the authors were not expanded."""
    if not manga.authors_expanded:
        return None
    names: list[str] = []
    for person in manga.authors:
        if person.name and person.name not in names:
            names.append(person.name)
    return ", ".join(names) or None


def total_chapters(last_chapter: str | None) -> int | None:
    """`lastChapter` as a count: "" and null stay None (never 0 by accident); decimals floor."""
    number = parse_chapter_number(last_chapter)
    if number is None:
        return None
    return math.floor(number)


def cover_url(manga: Manga, uploads_url: str = DEFAULT_UPLOADS_URL) -> str | None:
    if manga.cover is None or not manga.cover.file_name:
        return None
    return f"{uploads_url.rstrip('/')}/covers/{manga.id}/{manga.cover.file_name}"


def genre_names(manga: Manga) -> tuple[str, ...]:
    names: list[str] = []
    for tag in manga.tags:
        if tag.group != "genre":
            continue
        name = tag.names.get("en") or tag.name
        if name not in names:
            names.append(name)
    return tuple(names)


def title_choices(manga: Manga) -> tuple[str, ...]:
    """The main title and every first alternative a preference could pick instead."""
    choices = [manga_title(manga)]
    for lang, _ in manga.alt_titles:
        choice = manga_title(manga, lang)
        if choice not in choices:
            choices.append(choice)
    return tuple(choices)


def manga_row(manga: Manga, uploads_url: str = DEFAULT_UPLOADS_URL,
              title_language: str | None = None) -> MangaRow:
    title = manga_title(manga, title_language)
    return MangaRow(
        mangadex_id=manga.id,
        title=title,
        author=manga_author(manga),
        status=manga.status,
        total_chapters=total_chapters(manga.last_chapter),
        description=pick_localized(manga.description),
        cover_url=cover_url(manga, uploads_url),
        genres=genre_names(manga),
        slug_base=slugify(title, fallback=f"manga-{manga.id[:8]}"),
        created_at=manga.created_at,
        mangadex_updated_at=manga.updated_at,
        title_choices=title_choices(manga),
        content_rating=manga.content_rating,
    )
