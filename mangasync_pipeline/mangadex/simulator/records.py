"""In-memory records of the simulated MangaDex, and the timestamp helpers they use.

Timestamps are kept as integer UNIX seconds: MangaDex never shows fractions, and
integers sort and compare fast in the indexes.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from typing import Any

SINCE_RE = re.compile(r"^\d{4}-[0-1]\d-([0-2]\d|3[0-1])T([0-1]\d|2[0-3]):[0-5]\d:[0-5]\d$")
_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?)?"
    r"(Z|[+-]00:?00)?$"
)


def iso(ts: int) -> str:
    """MangaDex's response format: `YYYY-MM-DDTHH:MM:SS+00:00`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


def parse_since(value: str) -> int | None:
    """Parse a `*Since` query value; None when it breaks MangaDex's pattern."""
    if not SINCE_RE.match(value):
        return None
    try:
        return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:  # e.g. 2024-02-31 passes the regex
        return None


def parse_iso(value: str | int | float) -> int:
    """Lenient UTC timestamp parser for admin input (dates, Z, +00:00, epoch numbers)."""
    if isinstance(value, int | float):
        return int(value)
    m = _ISO_RE.match(value.strip())
    if not m:
        raise ValueError(f"not a UTC timestamp: {value!r}")
    y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups()[:6])
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


@dataclass(slots=True, eq=False)
class Person:
    """An author/artist."""

    id: str
    name: str
    created_at: int
    twitter: str | None = None
    json_cache: dict[str, bytes] | None = None  # rendered as author / artist


@dataclass(slots=True, eq=False)
class Group:
    """A scanlation group."""

    id: str
    name: str
    created_at: int
    focused_language: str = "en"
    official: bool = False
    json_cache: bytes | None = None


@dataclass(slots=True, eq=False)
class Uploader:
    id: str
    username: str
    json_cache: bytes | None = None


@dataclass(slots=True, eq=False)
class Cover:
    id: str
    file_name: str
    volume: str | None
    locale: str
    created_at: int


@dataclass(slots=True, eq=False)
class Chapter:
    id: str
    manga: Manga
    chapter: str | None
    volume: str | None
    title: str | None
    language: str
    external_url: str | None
    publish_at: int
    readable_at: int
    created_at: int
    updated_at: int
    pages: int
    version: int
    groups: list[Group]
    uploader: Uploader
    json_cache: bytes | None = None  # rendered attributes; chapters never change
    # Attributes rendered over the record's own, as given: hostile values (a 13-digit label,
    # 10^12 pages, a float) that the typed fields above cannot hold.
    raw: dict[str, Any] | None = None
    kind: str = "chapter"  # the item's `type`, as given: a hostile item may claim another


@dataclass(slots=True, eq=False)
class Manga:
    id: str
    title: dict[str, str]
    alt_titles: list[dict[str, str]]
    description: dict[str, str] | list[Any]
    original_language: str
    last_volume: str | None
    last_chapter: str | None
    demographic: str | None
    status: str
    year: int | None
    content_rating: str
    tag_ids: list[str]
    links: dict[str, str] | None
    created_at: int
    updated_at: int
    version: int
    authors: list[Person]
    artists: list[Person]
    cover: Cover
    creator_id: str | None
    related: list[tuple[str, str]]
    chapters: list[Chapter] = field(default_factory=list)
    # Maintained by the catalogue when chapters are added, so rendering stays O(1).
    latest: Chapter | None = None
    languages: list[str] = field(default_factory=list)
    null_language: bool = False  # render a null inside availableTranslatedLanguages
    raw: dict[str, Any] | None = None  # attributes rendered over the record's own, as given
    json_cache: dict[str, bytes] | None = None  # rendered parts; dropped on any change

    def note_chapter(self, ch: Chapter) -> None:
        self.chapters.append(ch)
        if self.latest is None or (ch.created_at, ch.id) > (self.latest.created_at, self.latest.id):
            self.latest = ch
        if ch.language not in self.languages:
            self.languages.append(ch.language)
        self.json_cache = None
