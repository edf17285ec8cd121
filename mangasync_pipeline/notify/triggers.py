"""HTTP trigger bodies (PROTOCOL.md, "HTTP triggers") as pydantic models.

FastAPI validates the single-trigger routes with these models and builds the OpenAPI document
from them; the batch route validates each of its triggers with `BATCH_ITEM`, so one bad trigger
is answered "invalid" without failing the others. `error_line` turns pydantic's errors into the
one-line `field: what is wrong` message every 400 carries.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic_core import ErrorDetails

from mangasync_pipeline.bounds import (
    TRIGGER_CHAPTER_LEN,
    TRIGGER_DEDUP_KEY_LEN,
    TRIGGER_LABEL_LEN,
    TRIGGER_LANGUAGE_LEN,
    TRIGGER_MESSAGE_LEN,
    TRIGGER_TITLE_LEN,
)

MAX_BODY = 64 * 1024
MAX_BATCH_BODY = 1024 * 1024
MAX_BATCH = 500
# Shared with the schema and the pipeline's checks, so the pipeline never sends what is refused.
MAX_TITLE = TRIGGER_TITLE_LEN
MAX_MESSAGE = TRIGGER_MESSAGE_LEN
MAX_DEDUP_KEY = TRIGGER_DEDUP_KEY_LEN
MAX_CHAPTER = TRIGGER_CHAPTER_LEN
MAX_LABEL = TRIGGER_LABEL_LEN
MAX_LANGUAGE = TRIGGER_LANGUAGE_LEN
MAX_ID = 2**63 - 1

KINDS = {"new-manga": "NEW_MANGA", "new-chapter": "NEW_CHAPTER", "manga-update": "MANGA_UPDATE"}

# ASCII only: `\d` would take "٣" (Arabic-Indic three) and Decimal would store it as "3".
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def normalise_chapter(value: Any) -> str | None:
    """A chapter number as canonical decimal text ("42.5", "181"), or None for no number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number, a decimal string or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, str):
        value = value.strip()
        if not _DECIMAL.fullmatch(value):
            raise ValueError(f"{value[:40]!r} is not a decimal number of ASCII digits")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("not a decimal number") from None
    if number < 0:
        raise ValueError("must not be negative")
    text = format(number.normalize(), "f") if number != 0 else "0"
    if len(text) > MAX_CHAPTER:
        raise ValueError(f"longer than {MAX_CHAPTER} characters")
    return text


def _text(limit: int, *, blank: bool = True) -> Any:
    checks = [AfterValidator(_no_nul)] if blank else [AfterValidator(_no_nul),
                                                      AfterValidator(_not_blank)]
    return Annotated[str, StringConstraints(strict=True, max_length=limit), *checks]


Title = _text(MAX_TITLE, blank=False)
Message = _text(MAX_MESSAGE)
DedupKey = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_DEDUP_KEY),
                     AfterValidator(_no_nul)]
Chapter = Annotated[
    str | None, BeforeValidator(normalise_chapter),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0},
                              {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                              {"type": "null"}],
                    "description": "the number used for ordering; null for none"}),
]


class Trigger(BaseModel):
    # Unknown fields are ignored, so older servers accept newer callers' bodies.
    model_config = ConfigDict(extra="ignore")

    manga_id: StrictInt = Field(description="local manga.id")
    title: Title
    dedup_key: DedupKey | None = Field(
        None, description="a second trigger with the same key creates nothing and answers "
                          "like the first")

    def payload(self) -> dict[str, Any]:
        """What is stored with the trigger (and its notifications' message)."""
        payload: dict[str, Any] = {"manga_id": self.manga_id, "title": self.title}
        if self.dedup_key is not None:
            payload["dedup_key"] = self.dedup_key
        return payload


class NewManga(Trigger):
    message: Message | None = None

    def payload(self) -> dict[str, Any]:
        return {**super().payload(), "message": self.message or f"New manga: {self.title}"}


class NewChapter(Trigger):
    chapter: Chapter = Field(description="the number used for ordering; null for a chapter "
                                         "without one (required)")
    label: _text(MAX_LABEL, blank=False) | None = Field(  # type: ignore[valid-type]
        None, description='the chapter label as MangaDex shows it ("12a", "10.5")')
    chapter_title: _text(MAX_TITLE) | None = None  # type: ignore[valid-type]
    language: _text(MAX_LANGUAGE) | None = None  # type: ignore[valid-type]

    def payload(self) -> dict[str, Any]:
        shown = self.label or self.chapter
        message = f"Chapter {shown}" if shown is not None else "New chapter"
        if self.chapter_title:
            message += f": {self.chapter_title}"
        if self.language:
            message += f" [{self.language}]"
        return {**super().payload(), "chapter": self.chapter, "label": self.label,
                "chapter_title": self.chapter_title, "language": self.language,
                "message": message}


class MangaUpdate(Trigger):
    message: _text(MAX_MESSAGE, blank=False)  # type: ignore[valid-type]

    def payload(self) -> dict[str, Any]:
        return {**super().payload(), "message": self.message}


class NewMangaItem(NewManga):
    kind: Literal["new-manga"]


class NewChapterItem(NewChapter):
    kind: Literal["new-chapter"]


class MangaUpdateItem(MangaUpdate):
    kind: Literal["manga-update"]


BATCH_ITEM: TypeAdapter[NewMangaItem | NewChapterItem | MangaUpdateItem] = TypeAdapter(
    Annotated[NewMangaItem | NewChapterItem | MangaUpdateItem, Field(discriminator="kind")])


class Batch(BaseModel):
    """Up to MAX_BATCH triggers; each is validated on its own and has its own result."""

    triggers: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH,
        description='each a trigger body plus "kind" (new-manga, new-chapter, manga-update)',
        json_schema_extra={"items": {"oneOf": [
            {"allOf": [{"$ref": f"#/components/schemas/{model.__name__}"},
                       {"type": "object", "required": ["kind"],
                        "properties": {"kind": {"const": kind}}}]}
            for kind, model in (("new-manga", NewManga), ("new-chapter", NewChapter),
                                ("manga-update", MangaUpdate))]}})


_MESSAGES = {
    "missing": "required",
    "json_invalid": "not valid JSON",
    "model_attributes_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "union_tag_not_found": "required (new-manga, new-chapter or manga-update)",
    "union_tag_invalid": "must be new-manga, new-chapter or manga-update",
}


def error_line(errors: list[ErrorDetails] | list[dict[str, Any]], skip: int = 0) -> str:
    """`field: what is wrong` for the first error (`skip` leading loc parts, e.g. "body")."""
    if not errors:
        return "body: invalid"
    err = errors[0]
    # A discriminated union puts the tag ("new-chapter") in the path: the field is what counts.
    loc = [str(p) for p in err.get("loc", ())][skip:]
    loc = [p for p in loc if p not in KINDS]
    kind = err.get("type", "")
    if kind == "json_invalid":
        loc = []
    elif kind == "union_tag_not_found" or kind == "union_tag_invalid":
        loc = loc[:1] + ["kind"] if loc and loc[0].isdigit() else ["kind"]
    elif loc and loc[-1] in ("int", "str", "float") or (len(loc) > 1 and loc[-1].startswith(
            ("function-", "constrained-"))):
        loc = loc[:-1]
    field = ".".join(loc) or "body"
    ctx = err.get("ctx") or {}
    if kind in _MESSAGES:
        what = _MESSAGES[kind]
    elif kind == "string_too_long":
        what = f"longer than {ctx.get('max_length')} characters"
    elif kind == "string_too_short":
        what = "must not be empty"
    elif kind == "too_long":
        what = f"more than {ctx.get('max_length')} items"
    elif kind == "too_short":
        what = "must not be empty"
    elif kind == "value_error":
        what = str(ctx.get("error") or err.get("msg", "invalid"))
    else:
        what = str(err.get("msg", "invalid")).lower()
    return f"{field}: {' '.join(what.split())}"[:300]
