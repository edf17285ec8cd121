"""Query-string parsing and validation for the simulated endpoints, MangaDex's rules."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from .records import parse_since

RESULT_WINDOW = 10000
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
LANG_RE = re.compile(r"^[a-z]{2}(-[a-z]{2})?$")
RATINGS = ("safe", "suggestive", "erotica", "pornographic")
DEFAULT_RATINGS = frozenset(("safe", "suggestive", "erotica"))
MANGA_ORDER_KEYS = frozenset((
    "title", "year", "createdAt", "updatedAt", "latestUploadedChapter", "followedCount",
    "relevance", "rating",
))
CHAPTER_ORDER_KEYS = frozenset(
    ("createdAt", "updatedAt", "publishAt", "readableAt", "volume", "chapter"))
MANGA_INCLUDES = frozenset(("manga", "cover_art", "author", "artist", "tag", "creator"))
CHAPTER_INCLUDES = frozenset(("manga", "scanlation_group", "user"))
# Array parameters; a bare `name=` form is rejected so client bugs surface here, not in prod.
_ARRAYS = frozenset(("ids", "includes", "contentRating", "translatedLanguage"))


class ApiError(Exception):
    """An error answered with MangaDex's error envelope."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def validation_error(param: str, message: str) -> ApiError:
    return ApiError(400, "validation_exception", f"Error validating /{param}: {message}")


def not_found(detail: str) -> ApiError:
    return ApiError(404, "not_found_http_exception", detail)


@dataclass(slots=True)
class MangaQuery:
    limit: int = 10
    offset: int = 0
    ids: list[str] | None = None
    created_since: int | None = None
    updated_since: int | None = None
    title: str | None = None
    ratings: frozenset[str] = DEFAULT_RATINGS
    order: list[tuple[str, bool]] = field(default_factory=list)  # (key, descending)
    includes: frozenset[str] = frozenset()

    def cache_key(self) -> tuple[object, ...]:
        ids = tuple(self.ids) if self.ids is not None else None
        return ("manga", ids, self.created_since, self.updated_since, self.title,
                self.ratings, tuple(self.order))


@dataclass(slots=True)
class ChapterQuery:
    limit: int = 100
    offset: int = 0
    manga: str | None = None
    ids: list[str] | None = None
    languages: frozenset[str] | None = None
    ratings: frozenset[str] = DEFAULT_RATINGS
    created_since: int | None = None
    updated_since: int | None = None
    publish_since: int | None = None
    order: list[tuple[str, bool]] = field(default_factory=list)
    include_future: bool | None = None
    include_empty: bool | None = None
    include_external: bool | None = None
    includes: frozenset[str] = frozenset()

    @property
    def default_filter(self) -> bool:
        """`publishAt <= now` applies only when no include* flag was given."""
        return (self.include_future is None and self.include_empty is None
                and self.include_external is None)

    def cache_key(self) -> tuple[object, ...]:
        ids = tuple(self.ids) if self.ids is not None else None
        return ("chapter", self.manga, ids, self.languages, self.ratings, self.created_since,
                self.updated_since, self.publish_since, tuple(self.order), self.include_future,
                self.include_empty, self.include_external)


class Params:
    """Raw query pairs grouped by name, `name[]` folded into `name`."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.scalars: dict[str, str] = {}
        self.arrays: dict[str, list[str]] = {}
        self.order: list[tuple[str, str]] = []
        for key, value in pairs:
            if key.startswith("order[") and key.endswith("]"):
                self.order.append((key[6:-1], value))
            elif key.endswith("[]"):
                self.arrays.setdefault(key[:-2], []).append(value)
            elif key in _ARRAYS:
                self.arrays.setdefault(key, []).append(value)
                self.scalars[key] = value
            else:
                self.scalars[key] = value

    def reject_bare_arrays(self, names: tuple[str, ...]) -> None:
        for name in names:
            if name in self.scalars:
                raise validation_error(name, f"Must be an array: send `{name}[]=...`")

    def integer(self, name: str, default: int, lo: int, hi: int | None) -> int:
        raw = self.scalars.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise validation_error(name, "Must be an integer") from None
        if value < lo:
            raise validation_error(name, f"Must have a minimum value of {lo}")
        if hi is not None and value > hi:
            raise validation_error(name, f"Must have a maximum value of {hi}")
        return value

    def since(self, name: str) -> int | None:
        raw = self.scalars.get(name)
        if raw is None:
            return None
        ts = parse_since(raw)
        if ts is None:
            raise validation_error(
                name,
                "Must match pattern ^\\d{4}-[0-1]\\d-([0-2]\\d|3[0-1])T([0-1]\\d|2[0-3])"
                ":[0-5]\\d:[0-5]\\d$",
            )
        return ts

    def uuids(self, name: str, max_items: int = 100) -> list[str] | None:
        values = self.arrays.get(name)
        if values is None:
            return None
        if len(values) > max_items:
            raise validation_error(name, f"Must have a maximum of {max_items} items")
        for i, v in enumerate(values):
            if not UUID_RE.match(v):
                raise validation_error(f"{name}/{i}", "Must be a valid UUID")
        return [v.lower() for v in values]

    def enum_set(self, name: str, allowed: frozenset[str] | tuple[str, ...],
                 default: frozenset[str] | None) -> frozenset[str] | None:
        values = self.arrays.get(name)
        if values is None:
            return default
        for i, v in enumerate(values):
            if v not in allowed:
                choices = ", ".join(sorted(allowed))
                raise validation_error(f"{name}/{i}", f"Must be one of {choices}")
        return frozenset(values)

    def flag(self, name: str) -> bool | None:
        raw = self.scalars.get(name)
        if raw is None:
            return None
        if raw not in ("0", "1"):
            raise validation_error(name, "Must be one of 0, 1")
        return raw == "1"

    def orders(self, allowed: frozenset[str]) -> list[tuple[str, bool]]:
        out = []
        for key, value in self.order:
            if key not in allowed:
                raise validation_error(f"order/{key}", "Is not a supported order key")
            if value not in ("asc", "desc"):
                raise validation_error(f"order/{key}", "Must be one of asc, desc")
            out.append((key, value == "desc"))
        return out


def _window(offset: int, limit: int) -> None:
    if offset + limit > RESULT_WINDOW:
        raise ApiError(
            400, "bad_request_http_exception",
            "Result window is too large, from + size must be less than or equal to: "
            f"[{RESULT_WINDOW}] but was [{offset + limit}]. See the scroll api for a more "
            "efficient way to request large data sets. This limit can be set by changing the "
            "[index.max_result_window] index level setting.",
        )


def manga_list_query(p: Params) -> MangaQuery:
    p.reject_bare_arrays(("ids", "contentRating"))
    q = MangaQuery(
        limit=p.integer("limit", 10, 0, 100),
        offset=p.integer("offset", 0, 0, None),
        ids=p.uuids("ids"),
        created_since=p.since("createdAtSince"),
        updated_since=p.since("updatedAtSince"),
        title=p.scalars.get("title") or None,
        ratings=p.enum_set("contentRating", RATINGS, DEFAULT_RATINGS) or DEFAULT_RATINGS,
        order=p.orders(MANGA_ORDER_KEYS) or [("latestUploadedChapter", True)],
        includes=p.enum_set("includes", MANGA_INCLUDES, frozenset()) or frozenset(),
    )
    _window(q.offset, q.limit)
    return q


def manga_includes(p: Params) -> frozenset[str]:
    return p.enum_set("includes", MANGA_INCLUDES, frozenset()) or frozenset()


def chapter_query(p: Params, feed: bool) -> ChapterQuery:
    p.reject_bare_arrays(("ids", "contentRating", "translatedLanguage"))
    languages = p.arrays.get("translatedLanguage")
    if languages is not None:
        for i, lang in enumerate(languages):
            if not LANG_RE.match(lang):
                raise validation_error(f"translatedLanguage/{i}",
                                       "Must match pattern ^[a-z]{2}(-[a-z]{2})?$")
    manga = None
    if not feed and "manga" in p.scalars:
        manga = p.scalars["manga"]
        if not UUID_RE.match(manga):
            raise validation_error("manga", "Must be a valid UUID")
        manga = manga.lower()
    q = ChapterQuery(
        limit=p.integer("limit", 100, 1, 500) if feed else p.integer("limit", 10, 0, 100),
        offset=p.integer("offset", 0, 0, None),
        manga=manga,
        ids=None if feed else p.uuids("ids"),
        languages=frozenset(languages) if languages is not None else None,
        ratings=p.enum_set("contentRating", RATINGS, DEFAULT_RATINGS) or DEFAULT_RATINGS,
        created_since=p.since("createdAtSince"),
        updated_since=p.since("updatedAtSince"),
        publish_since=p.since("publishAtSince"),
        order=p.orders(CHAPTER_ORDER_KEYS),
        include_future=p.flag("includeFuturePublishAt"),
        include_empty=p.flag("includeEmptyPages"),
        include_external=p.flag("includeExternalUrl"),
        includes=p.enum_set("includes", CHAPTER_INCLUDES, frozenset()) or frozenset(),
    )
    _window(q.offset, q.limit)
    return q


ERROR_IDS = {
    "not_found_http_exception": "770a6444-c695-570d-bfd2-a0eec2e95ce9",
}


def error_id(title: str) -> str:
    """MangaDex reuses one error id per kind of error (see the 404 captures)."""
    return ERROR_IDS.get(title) or str(uuid.uuid5(uuid.NAMESPACE_URL, f"mangadex-error:{title}"))
