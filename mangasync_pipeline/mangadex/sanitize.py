"""Cleaning of text that comes from MangaDex users: it is hostile until proven otherwise."""

from __future__ import annotations

import re
import unicodedata

from mangasync_pipeline.bounds import DESCRIPTION_LEN, NAME_LEN, SLUG_LEN, TITLE_LEN

# Free text is cut to these (a longer title is still the same manga); short fields that make a
# record's identity are checked, not cut (models.py).
TITLE_MAX = TITLE_LEN
NAME_MAX = NAME_LEN
DESCRIPTION_MAX = DESCRIPTION_LEN

# Unicode category Cc (C0 and C1 controls, NUL included) except tab and newline, and Cs:
# lone surrogates, which JSON allows but UTF-8 (and PostgreSQL) rejects.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_text(value: object, max_len: int) -> str:
    """NFC text without control characters (newline and tab kept), trimmed and capped.

    Non-strings become "" so one odd field never breaks a whole item.
    """
    if not isinstance(value, str):
        return ""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():  # ASCII is already NFC; most of MangaDex's text is ASCII
        text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text)
    text = text.strip()
    if len(text) > max_len:
        text = text[:max_len].rstrip()
    return text


def clean_optional(value: object, max_len: int) -> str | None:
    """`clean_text`, but None (not "") when nothing is left."""
    text = clean_text(value, max_len)
    return text or None


def clean_localized(value: object, max_len: int) -> dict[str, str]:
    """A `{lang: text}` map; MangaDex sometimes sends `[]` for an empty one."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, str] = {}
    for lang, text in value.items():
        if not isinstance(lang, str):
            continue
        cleaned = clean_text(text, max_len)
        if cleaned:
            out[clean_text(lang, 16)] = cleaned
    return out


_NON_SLUG = re.compile(r"[^a-z0-9]+")
SLUG_MAX = SLUG_LEN - 20  # room for an id suffix that makes it unique


def slugify(text: str, fallback: str) -> str:
    """ASCII-folded, lowercase, hyphenated; `fallback` when nothing ASCII is left."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NON_SLUG.sub("-", folded.lower()).strip("-")
    slug = slug[:SLUG_MAX].rstrip("-")
    return slug or fallback
