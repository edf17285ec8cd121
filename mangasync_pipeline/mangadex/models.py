"""Typed MangaDex objects, parsed leniently from real responses.

Every documented field is treated as optional (the live API drifts from its spec). An item
missing what we cannot do without (id, attributes, its timestamps) raises `ItemError`, and
the page parser skips it instead of failing the page.

This is the one boundary: every field that reaches the database or a reader is checked here,
by the pydantic models `MangaBounds` and `ChapterBounds`, against the bounds of
`mangasync_pipeline.bounds` (the schema's columns and the server's trigger limits come from the
same numbers). A record that fails is skipped with the field and a one-line reason
(`Page.rejected`), for the sync to quarantine; the rest of the page goes on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mangasync_pipeline.bounds import (
    CLOCK_SKEW,
    CONTENT_RATING_LEN,
    EXTERNAL_URL_LEN,
    GENRE_NAME_LEN,
    INT_MAX,
    LABEL_LEN,
    LANGUAGE_LEN,
    NUMBER_LIMIT,
    NUMBER_SCALE,
    STATUS_LEN,
    VOLUME_LEN,
)
from mangasync_pipeline.ids import is_uuid
from mangasync_pipeline.mangadex.dates import parse_optional_timestamp, parse_timestamp
from mangasync_pipeline.mangadex.errors import MalformedResponseError
from mangasync_pipeline.mangadex.sanitize import (
    DESCRIPTION_MAX,
    NAME_MAX,
    TITLE_MAX,
    clean_localized,
    clean_optional,
    clean_text,
)

log = logging.getLogger("mangasync.mangadex")

T = TypeVar("T")

# MangaDex's label pattern is `^((0|[1-9]\d*)(\.\d+)?[a-z]?)?$`: "12a" is chapter 12's sibling.
# ASCII digits only: `\d` alone takes "٩٩٩" (Arabic-Indic) and Decimal reads it as 999.
_NUMBER = re.compile(r"^(\d+(?:\.\d+)?)[a-z]?$", re.IGNORECASE | re.ASCII)
_SHORT = 64  # enumerations that are read but never stored (original language, state)
# Longer than any bound: a value this long is refused by its check, never cut to fit it.
_UNCUT = 1000


class ItemError(ValueError):
    """One item of a response cannot be used; the rest of the page can.

    `field` names what failed (MangaDex's attribute name) when the item itself was readable;
    `parent_id` is the manga of a chapter."""

    def __init__(self, reason: str, *, field: str = "item", item_id: str | None = None,
                 parent_id: str | None = None, created_at: datetime | None = None) -> None:
        super().__init__(reason)
        self.field = field
        self.item_id = item_id
        self.parent_id = parent_id
        self.created_at = created_at


@dataclass(frozen=True, slots=True)
class Rejection:
    """An item skipped by the checks: what the sync quarantines."""

    source: str  # "manga", "chapter", "tag"
    mangadex_id: str
    field: str
    reason: str
    parent_id: str | None = None
    # The record's createdAt when it could be read: whether a manga would have been new.
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Tag:
    id: str
    name: str
    group: str | None
    names: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Person:
    """An author or artist; `name` is None when the relationship was not expanded."""

    id: str
    name: str | None


@dataclass(frozen=True, slots=True)
class Cover:
    id: str
    file_name: str | None
    volume: str | None = None
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class Manga:
    id: str
    title: dict[str, str]
    alt_titles: tuple[tuple[str, str], ...]
    description: dict[str, str]
    status: str | None
    content_rating: str | None
    original_language: str | None
    publication_demographic: str | None
    year: int | None
    last_chapter: str | None
    last_volume: str | None
    latest_uploaded_chapter: str | None
    available_languages: tuple[str, ...]
    tags: tuple[Tag, ...]
    authors: tuple[Person, ...]
    artists: tuple[Person, ...]
    cover: Cover | None
    created_at: datetime
    updated_at: datetime
    version: int | None = None
    state: str | None = None

    @property
    def authors_expanded(self) -> bool:
        """True when the response carried author attributes (`includes[]=author`)."""
        return bool(self.authors) and all(a.name is not None for a in self.authors)


@dataclass(frozen=True, slots=True)
class Chapter:
    id: str
    manga_id: str
    chapter: str | None
    number: Decimal | None
    volume: str | None
    title: str | None
    translated_language: str | None
    pages: int
    external_url: str | None
    is_unavailable: bool
    publish_at: datetime
    readable_at: datetime
    created_at: datetime
    updated_at: datetime
    version: int | None = None
    group_ids: tuple[str, ...] = ()
    uploader_id: str | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One response's worth of items; `skipped` counts malformed items left out."""

    items: list[T]
    total: int
    limit: int
    offset: int
    skipped: int = 0
    skipped_ids: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()


# --- field helpers -------------------------------------------------------------------------


def _uuid(value: object, what: str) -> str:
    if not isinstance(value, str) or not is_uuid(value):
        raise ItemError(f"{what} is not a UUID: {str(value)[:60]!r}")
    return value.lower()


def _attributes(obj: object) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(obj, dict):
        raise ItemError(f"item is a {type(obj).__name__}, not an object")
    item_id = _uuid(obj.get("id"), "id")
    attrs = obj.get("attributes")
    if not isinstance(attrs, dict):
        raise ItemError(f"item {item_id} has no attributes")
    return item_id, attrs


def _timestamp(attrs: Mapping[str, Any], key: str, item_id: str) -> datetime:
    try:
        return parse_timestamp(attrs.get(key))
    except ValueError as exc:
        raise ItemError(f"{key}: unparsable ({exc})", field=key, item_id=item_id) from None


def _optional_timestamp(attrs: Mapping[str, Any], key: str, item_id: str) -> datetime | None:
    try:
        return parse_optional_timestamp(attrs.get(key))
    except ValueError as exc:
        raise ItemError(f"{key}: unparsable ({exc})", field=key, item_id=item_id) from None


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _relationships(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rels = obj.get("relationships")
    if not isinstance(rels, list):
        return []
    out = []
    for rel in rels:
        if (
            isinstance(rel, dict)
            and isinstance(rel.get("id"), str)
            and is_uuid(rel["id"])
        ):
            out.append(rel)
    return out


def pick_localized(values: Mapping[str, str], preferred: str = "en") -> str | None:
    """The preferred language's text, else the first one present."""
    if values.get(preferred):
        return values[preferred]
    for text in values.values():
        if text:
            return text
    return None


def parse_chapter_number(label: str | None) -> Decimal | None:
    """`"45.5"` -> 45.5, `"12a"` -> 12; None for null, "", and labels such as "EXTRA"."""
    if label is None:
        return None
    match = _NUMBER.match(label.strip())
    if match is None:
        return None
    return Decimal(match.group(1))


# --- the boundary checks -------------------------------------------------------------------


def _not_future(value: datetime | None, info: ValidationInfo) -> datetime | None:
    now: datetime = (info.context or {}).get("now") or datetime.now(UTC)
    if value is not None and value > now + CLOCK_SKEW:
        raise ValueError(f"{value.isoformat()} is later than now plus "
                         f"{CLOCK_SKEW.total_seconds():.0f} s")
    return value


def _numeric_text(label: str) -> bool:
    """Whether a label reads as a number to something (float: "NaN", "-1", "1e308", "٩٩٩")."""
    try:
        float(label)
    except ValueError:
        return False
    return True


def check_label(label: str | None) -> str | None:
    """A chapter label is a non-negative ASCII decimal ("12", "10.5", "12a") below
    NUMBER_LIMIT, or text that reads as no number at all ("EXTRA"); anything that reads as
    a number some other way is refused rather than shown as another chapter."""
    if label is None:
        return None
    if len(label) > LABEL_LEN:
        raise ValueError(f"{len(label)} characters, over {LABEL_LEN}")
    number = parse_chapter_number(label)
    if number is None and (_numeric_text(label)
                           or any(ch.isdigit() and not ch.isascii() for ch in label)):
        raise ValueError(f"{label!r} is not a non-negative decimal of ASCII digits")
    # Compared as the column stores it (NUMBER_SCALE decimals, rounded): 999999999.9996
    # would round up to the limit and overflow PostgreSQL's column.
    if number is not None and round(number, NUMBER_SCALE) >= NUMBER_LIMIT:
        raise ValueError(f"{label!r} is not below {NUMBER_LIMIT:,}")
    return label


class _Bounds(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, arbitrary_types_allowed=True)

    created_at: datetime
    updated_at: datetime

    _future = field_validator("created_at", "updated_at")(_not_future)


class ChapterBounds(_Bounds):
    """What a chapter row and its NEW_CHAPTER trigger hold (`chapters`, PROTOCOL.md)."""

    chapter: str | None
    volume: str | None = Field(max_length=VOLUME_LEN)
    translated_language: str | None = Field(max_length=LANGUAGE_LEN)
    pages: int = Field(ge=0, le=INT_MAX)
    external_url: str | None = Field(max_length=EXTERNAL_URL_LEN)

    @field_validator("chapter")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return check_label(value)


class MangaBounds(_Bounds):
    """What a `manga` row and its genre links hold."""

    status: str | None = Field(max_length=STATUS_LEN)
    content_rating: str | None = Field(max_length=CONTENT_RATING_LEN)
    last_chapter: str | None
    genres: tuple[str, ...]

    @field_validator("last_chapter")
    @classmethod
    def _count(cls, value: str | None) -> str | None:
        number = parse_chapter_number(value)
        if number is not None and number > INT_MAX:
            raise ValueError(f"{value!r} is beyond {INT_MAX:,} chapters")
        return value

    @field_validator("genres")
    @classmethod
    def _genres(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if len(name) > GENRE_NAME_LEN:
                raise ValueError(f"genre {name[:40]!r}... is {len(name)} characters, over "
                                 f"{GENRE_NAME_LEN}")
        return value


# MangaDex's attribute names, so a reason names what an operator finds in MangaDex's JSON.
_ATTRIBUTE = {"created_at": "createdAt", "updated_at": "updatedAt", "volume": "volume",
              "translated_language": "translatedLanguage", "external_url": "externalUrl",
              "content_rating": "contentRating", "last_chapter": "lastChapter",
              "genres": "tags", "status": "status", "pages": "pages", "chapter": "chapter"}


def _check(model: type[BaseModel], values: dict[str, Any], item_id: str,
           now: datetime | None, parent_id: str | None = None) -> None:
    try:
        model.model_validate(values, context={"now": now})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "item"
        attribute = _ATTRIBUTE.get(name, name)
        ctx = err.get("ctx") or {}
        if err["type"] == "value_error":
            what = str(ctx.get("error", err["msg"]))
        elif err["type"] == "string_too_long":
            what = f"{len(str(err['input']))} characters, over {ctx.get('max_length')}"
        else:
            what = f"{str(err['input'])[:40]!r}: {err['msg'].lower()}"
        raise ItemError(f"{attribute}: {' '.join(what.split())}"[:300], field=attribute,
                        item_id=item_id, parent_id=parent_id,
                        created_at=values.get("created_at")) from None


# --- item parsers --------------------------------------------------------------------------


def parse_tag(obj: object) -> Tag:
    tag_id, attrs = _attributes(obj)
    names = clean_localized(attrs.get("name"), NAME_MAX)
    name = pick_localized(names)
    if name is None:
        raise ItemError(f"tag {tag_id} has no name")
    return Tag(id=tag_id, name=name, group=clean_optional(attrs.get("group"), _SHORT), names=names)


def _person(rel: Mapping[str, Any]) -> Person:
    attrs = rel.get("attributes")
    name = clean_optional(attrs.get("name"), NAME_MAX) if isinstance(attrs, dict) else None
    return Person(id=rel["id"].lower(), name=name)


def _cover(rel: Mapping[str, Any]) -> Cover:
    attrs = rel.get("attributes")
    if not isinstance(attrs, dict):
        return Cover(id=rel["id"].lower(), file_name=None)
    file_name = clean_optional(attrs.get("fileName"), NAME_MAX)
    # The file name becomes part of a URL: refuse anything that could step out of it.
    if file_name is not None and ("/" in file_name or "\\" in file_name or ".." in file_name):
        file_name = None
    return Cover(
        id=rel["id"].lower(),
        file_name=file_name,
        volume=clean_optional(attrs.get("volume"), _SHORT),
        locale=clean_optional(attrs.get("locale"), _SHORT),
    )


def parse_manga(obj: object, *, now: datetime | None = None) -> Manga:
    manga_id, attrs = _attributes(obj)
    assert isinstance(obj, dict)
    alt_titles: list[tuple[str, str]] = []
    raw_alts = attrs.get("altTitles")
    if isinstance(raw_alts, list):
        for alt in raw_alts:
            alt_titles.extend(clean_localized(alt, TITLE_MAX).items())
    tags = []
    raw_tags = attrs.get("tags")
    if isinstance(raw_tags, list):
        for raw_tag in raw_tags:
            try:
                tags.append(parse_tag(raw_tag))
            except ItemError:
                continue  # a broken tag costs the manga one genre, not its row
    rels = _relationships(obj)
    authors = tuple(_person(r) for r in rels if r.get("type") == "author")
    artists = tuple(_person(r) for r in rels if r.get("type") == "artist")
    covers = [_cover(r) for r in rels if r.get("type") == "cover_art"]
    langs = attrs.get("availableTranslatedLanguages")
    latest = attrs.get("latestUploadedChapter")
    created_at = _timestamp(attrs, "createdAt", manga_id)
    updated_at = _timestamp(attrs, "updatedAt", manga_id)
    status = clean_optional(attrs.get("status"), _UNCUT)
    content_rating = clean_optional(attrs.get("contentRating"), _UNCUT)
    last_chapter = clean_optional(attrs.get("lastChapter"), _UNCUT)
    _check(MangaBounds, {
        "created_at": created_at, "updated_at": updated_at, "status": status,
        "content_rating": content_rating, "last_chapter": last_chapter,
        "genres": tuple(t.names.get("en") or t.name for t in tags if t.group == "genre"),
    }, manga_id, now)
    return Manga(
        id=manga_id,
        title=clean_localized(attrs.get("title"), TITLE_MAX),
        alt_titles=tuple(alt_titles),
        description=clean_localized(attrs.get("description"), DESCRIPTION_MAX),
        status=status,
        content_rating=content_rating,
        original_language=clean_optional(attrs.get("originalLanguage"), _SHORT),
        publication_demographic=clean_optional(attrs.get("publicationDemographic"), _SHORT),
        year=_int_or_none(attrs.get("year")),
        last_chapter=last_chapter,
        last_volume=clean_optional(attrs.get("lastVolume"), _SHORT),
        latest_uploaded_chapter=(
            latest.lower() if isinstance(latest, str) and is_uuid(latest) else None
        ),
        available_languages=tuple(
            clean_text(lang, _SHORT) for lang in langs if isinstance(lang, str)
        )
        if isinstance(langs, list)
        else (),
        tags=tuple(tags),
        authors=authors,
        artists=artists,
        cover=covers[0] if covers else None,
        created_at=created_at,
        updated_at=updated_at,
        version=_int_or_none(attrs.get("version")),
        state=clean_optional(attrs.get("state"), _SHORT),
    )


def parse_chapter(
    obj: object, *, manga_id: str | None = None, now: datetime | None = None
) -> Chapter:
    """`manga_id` is used when the item has no manga relationship (feeds know their manga)."""
    chapter_id, attrs = _attributes(obj)
    assert isinstance(obj, dict)
    rels = _relationships(obj)
    manga_ids = [r["id"].lower() for r in rels if r.get("type") == "manga"]
    owner = manga_ids[0] if manga_ids else manga_id
    if owner is None:
        raise ItemError(f"chapter {chapter_id} has no manga relationship", field="manga",
                        item_id=chapter_id)
    label = attrs.get("chapter")
    label = clean_text(label, _UNCUT) if isinstance(label, str) else None
    external_url = clean_optional(attrs.get("externalUrl"), _UNCUT)
    created_at = _timestamp(attrs, "createdAt", chapter_id)
    updated_at = _timestamp(attrs, "updatedAt", chapter_id)
    publish_at = _timestamp(attrs, "publishAt", chapter_id)
    readable_at = _optional_timestamp(attrs, "readableAt", chapter_id)
    if readable_at is None:
        # MangaDex's rule: a future publishAt on an external-link chapter means
        # "always just a link", readable since creation.
        now = now or datetime.now(UTC)
        readable_at = created_at if (publish_at > now and external_url) else publish_at
    pages = _int_or_none(attrs.get("pages"))
    volume = clean_optional(attrs.get("volume"), _UNCUT)
    language = clean_optional(attrs.get("translatedLanguage"), _UNCUT)
    _check(ChapterBounds, {
        "created_at": created_at, "updated_at": updated_at, "chapter": label or None,
        "volume": volume, "translated_language": language, "pages": pages or 0,
        "external_url": external_url}, chapter_id, now, owner)
    uploaders = [r["id"].lower() for r in rels if r.get("type") == "user"]
    return Chapter(
        id=chapter_id,
        manga_id=owner,
        chapter=label or None,
        number=parse_chapter_number(label),
        volume=volume,
        title=clean_optional(attrs.get("title"), TITLE_MAX),
        translated_language=language,
        pages=pages or 0,
        external_url=external_url,
        is_unavailable=attrs.get("isUnavailable") is True,
        publish_at=publish_at,
        readable_at=readable_at,
        created_at=created_at,
        updated_at=updated_at,
        version=_int_or_none(attrs.get("version")),
        group_ids=tuple(r["id"].lower() for r in rels if r.get("type") == "scanlation_group"),
        uploader_id=uploaders[0] if uploaders else None,
    )


# --- envelopes -----------------------------------------------------------------------------


def _check_ok(payload: object, endpoint: str, response: str) -> Mapping[str, Any]:
    if not isinstance(payload, dict):
        raise MalformedResponseError(
            f"malformed response from {endpoint}: body is a JSON {type(payload).__name__}, "
            "not an object",
            endpoint=endpoint,
        )
    if payload.get("result") != "ok":
        raise MalformedResponseError(
            f"malformed response from {endpoint}: result is {payload.get('result')!r}, not 'ok'",
            endpoint=endpoint,
        )
    if payload.get("response") not in (response, None):
        raise MalformedResponseError(
            f"malformed response from {endpoint}: response is {payload.get('response')!r}, "
            f"expected {response!r}",
            endpoint=endpoint,
        )
    return payload


def parse_entity(payload: object, endpoint: str, parse: Callable[[object], T]) -> T:
    """A single-entity envelope; a malformed entity is a malformed response."""
    body = _check_ok(payload, endpoint, "entity")
    data = body.get("data")
    if not isinstance(data, dict):
        raise MalformedResponseError(
            f"malformed response from {endpoint}: data is a {type(data).__name__}, not an object",
            endpoint=endpoint,
        )
    try:
        return parse(data)
    except ItemError as exc:
        raise MalformedResponseError(
            f"malformed response from {endpoint}: {exc}", endpoint=endpoint
        ) from None


def _raw_id(obj: object) -> str:
    if isinstance(obj, dict) and isinstance(obj.get("id"), str):
        return clean_text(obj["id"], _SHORT) or "<no id>"
    return "<no id>"


def _source_of(endpoint: str) -> str:
    """What a collection holds, by the endpoint asked: never by the `type` an item claims (a
    chapter calling itself a manga was quarantined where the chapter sync never looked)."""
    path = endpoint.split("?", 1)[0].rstrip("/")
    if path == "/chapter" or path.endswith("/feed"):
        return "chapter"
    return {"/manga/tag": "tag", "/manga": "manga"}.get(path, "item")


def parse_collection(
    payload: object,
    endpoint: str,
    parse: Callable[[object], T],
    *,
    logger: logging.Logger | None = None,
) -> Page[T]:
    """A collection envelope; malformed items are skipped, logged with their id and counted."""
    body = _check_ok(payload, endpoint, "collection")
    data = body.get("data")
    if not isinstance(data, list):
        raise MalformedResponseError(
            f"malformed response from {endpoint}: data is a {type(data).__name__}, not a list",
            endpoint=endpoint,
        )
    items: list[T] = []
    skipped: list[str] = []
    rejected: list[Rejection] = []
    for obj in data:
        try:
            items.append(parse(obj))
        except Exception as exc:  # one odd item, whatever went wrong, costs only itself
            raw_id = _raw_id(obj)
            skipped.append(raw_id)
            if isinstance(exc, ItemError):
                field, reason, parent, created = (exc.field, str(exc), exc.parent_id,
                                                  exc.created_at)
            else:
                field, parent, created = "item", None, None
                reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
            if is_uuid(raw_id):
                rejected.append(Rejection(_source_of(endpoint), raw_id.lower(), field, reason,
                                          parent, created))
            (logger or log).warning("skipped item %s from %s: %s", raw_id, endpoint, reason)

    def _count(key: str, default: int) -> int:
        value = body.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    return Page(
        items=items,
        total=_count("total", len(data)),
        limit=_count("limit", len(data)),
        offset=_count("offset", 0),
        skipped=len(skipped),
        skipped_ids=tuple(skipped),
        rejected=tuple(rejected),
    )
