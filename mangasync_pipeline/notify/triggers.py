"""Validation of HTTP trigger bodies (PROTOCOL.md, "HTTP triggers") into stored payloads."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_BODY = 64 * 1024
MAX_TITLE = 500
MAX_MESSAGE = 4000
MAX_DEDUP_KEY = 200
MAX_CHAPTER = 32
MAX_ID = 2**63 - 1

KINDS = {"new-manga": "NEW_MANGA", "new-chapter": "NEW_CHAPTER", "manga-update": "MANGA_UPDATE"}

_DECIMAL = re.compile(r"^\d+(\.\d+)?$")


class TriggerError(ValueError):
    """A trigger body we refuse with 400; the message names the field."""


def _text(body: dict[str, Any], name: str, *, required: bool, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise TriggerError(f"{name}: required")
        return None
    if not isinstance(value, str):
        raise TriggerError(f"{name}: must be a string")
    if required and not value.strip():
        raise TriggerError(f"{name}: must not be empty")
    if len(value) > limit:
        raise TriggerError(f"{name}: longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TriggerError(f"{name}: not valid Unicode text") from None
    if "\x00" in value:
        raise TriggerError(f"{name}: contains a NUL character")
    return value


def normalise_chapter(value: Any) -> str | None:
    """A chapter number as canonical decimal text ("42.5", "181"), or None for no number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TriggerError("chapter: must be a number, a decimal string or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise TriggerError("chapter: must be a finite number")
    if isinstance(value, str):
        if not _DECIMAL.match(value.strip()):
            raise TriggerError(f"chapter: {value[:40]!r} is not a decimal number")
        value = value.strip()
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise TriggerError("chapter: not a decimal number") from None
    if number < 0:
        raise TriggerError("chapter: must not be negative")
    text = format(number.normalize(), "f") if number != 0 else "0"
    if len(text) > MAX_CHAPTER:
        raise TriggerError(f"chapter: longer than {MAX_CHAPTER} characters")
    return text


def validate(kind: str, body: Any) -> dict[str, Any]:
    """The payload to store for a trigger of `kind` (a NEW_* type), or TriggerError."""
    if not isinstance(body, dict):
        raise TriggerError("body: must be a JSON object")
    manga_id = body.get("manga_id")
    if manga_id is None:
        raise TriggerError("manga_id: required")
    if type(manga_id) is not int:
        raise TriggerError("manga_id: must be an integer")
    title = _text(body, "title", required=True, limit=MAX_TITLE)
    payload: dict[str, Any] = {"manga_id": manga_id, "title": title}
    dedup_key = _text(body, "dedup_key", required=False, limit=MAX_DEDUP_KEY)
    if dedup_key is not None:
        if not dedup_key:
            raise TriggerError("dedup_key: must not be empty")
        payload["dedup_key"] = dedup_key
    if kind == "NEW_CHAPTER":
        if "chapter" not in body:
            raise TriggerError("chapter: required (null for a chapter without a number)")
        chapter = normalise_chapter(body["chapter"])
        chapter_title = _text(body, "chapter_title", required=False, limit=MAX_TITLE)
        language = _text(body, "language", required=False, limit=16)
        payload.update(chapter=chapter, chapter_title=chapter_title, language=language)
        label = f"Chapter {chapter}" if chapter is not None else "New chapter"
        if chapter_title:
            label += f": {chapter_title}"
        if language:
            label += f" [{language}]"
        payload["message"] = label
    elif kind == "MANGA_UPDATE":
        payload["message"] = _text(body, "message", required=True, limit=MAX_MESSAGE)
    else:
        message = _text(body, "message", required=False, limit=MAX_MESSAGE)
        payload["message"] = message or f"New manga: {title}"
    return payload


def schema(kind: str) -> dict[str, Any]:
    """The OpenAPI request body schema of a trigger."""
    props: dict[str, Any] = {
        "manga_id": {"type": "integer", "description": "local manga.id"},
        "title": {"type": "string", "maxLength": MAX_TITLE},
        "dedup_key": {"type": "string", "maxLength": MAX_DEDUP_KEY},
    }
    required = ["manga_id", "title"]
    if kind == "NEW_CHAPTER":
        props["chapter"] = {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]}
        props["chapter_title"] = {"type": "string"}
        props["language"] = {"type": "string"}
        required.append("chapter")
    elif kind == "MANGA_UPDATE":
        props["message"] = {"type": "string"}
        required.append("message")
    return {"type": "object", "properties": props, "required": required}
