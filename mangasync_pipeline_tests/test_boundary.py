"""The one boundary: what the models let through fits the schema and every trigger the pipeline
builds from it is one the notification server accepts (its own pydantic models decide)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mangasync_pipeline import bounds
from mangasync_pipeline.db import tables
from mangasync_pipeline.mangadex.mapping import manga_row
from mangasync_pipeline.mangadex.models import ItemError, parse_chapter, parse_manga
from mangasync_pipeline.notify import triggers
from mangasync_pipeline.sync.catalogue_store import _update_message
from mangasync_pipeline.sync.chapters import MangaInfo, _payload

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CHAPTER_ID = "0aaf8b27-0013-4ae0-8935-91a089466874"
MANGA_ID = "127820bd-8fc5-47b8-8782-e680317bf41d"


def chapter(**attrs: Any) -> dict[str, Any]:
    stamp = "2025-12-31T00:00:00+00:00"
    return {"id": CHAPTER_ID, "type": "chapter", "attributes": {
        "chapter": "1", "volume": None, "title": "", "translatedLanguage": "en",
        "externalUrl": None, "publishAt": stamp, "readableAt": stamp, "createdAt": stamp,
        "updatedAt": stamp, "pages": 3, **attrs},
        "relationships": [{"id": MANGA_ID, "type": "manga"}]}


def manga(**attrs: Any) -> dict[str, Any]:
    stamp = "2025-12-31T00:00:00+00:00"
    return {"id": MANGA_ID, "type": "manga", "attributes": {
        "title": {"en": "T"}, "status": "ongoing", "contentRating": "safe",
        "lastChapter": "", "createdAt": stamp, "updatedAt": stamp, "tags": [], **attrs},
        "relationships": []}


@pytest.mark.parametrize("label", ["0", "12", "10.5", "12a", "999999999.999", "EXTRA",
                                   "Vol.2 Extra", "x" * 16, None])
def test_labels_readers_can_be_shown_pass(label: str | None) -> None:
    assert parse_chapter(chapter(chapter=label), now=NOW).chapter == label


@pytest.mark.parametrize(("label", "why"), [
    ("٩٩٩", "'٩٩٩' is not a non-negative decimal of ASCII digits"),
    ("９９８", "'９９８' is not a non-negative decimal of ASCII digits"),
    ("1e308", "'1e308' is not a non-negative decimal of ASCII digits"),
    ("NaN", "'NaN' is not a non-negative decimal of ASCII digits"),
    ("inf", "'inf' is not a non-negative decimal of ASCII digits"),
    ("-1", "'-1' is not a non-negative decimal of ASCII digits"),
    ("1_000", "'1_000' is not a non-negative decimal of ASCII digits"),
    ("1000000000", "'1000000000' is not below 1,000,000,000"),
    # Rounds up to the limit in the column (3 decimals): PostgreSQL would overflow.
    ("999999999.9996", "'999999999.9996' is not below 1,000,000,000"),
    ("x" * 17, "17 characters, over 16"),
])
def test_labels_that_would_mislead_a_reader_are_refused_with_the_reason(
        label: str, why: str) -> None:
    with pytest.raises(ItemError) as caught:
        parse_chapter(chapter(chapter=label), now=NOW)
    assert str(caught.value) == f"chapter: {why}"
    assert (caught.value.field, caught.value.item_id, caught.value.parent_id) == (
        "chapter", CHAPTER_ID, MANGA_ID)


@pytest.mark.parametrize(("attrs", "field"), [
    ({"pages": 10**12}, "pages"), ({"pages": -1}, "pages"), ({"volume": "v" * 17}, "volume"),
    ({"translatedLanguage": "x" * 9}, "translatedLanguage"),
    ({"updatedAt": "9999-12-31T23:59:59+00:00"}, "updatedAt"),
    ({"createdAt": (NOW + timedelta(minutes=6)).isoformat()}, "createdAt"),
])
def test_chapter_fields_out_of_bounds_name_their_field(attrs: dict[str, Any], field: str) -> None:
    with pytest.raises(ItemError) as caught:
        parse_chapter(chapter(**attrs), now=NOW)
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")


def test_a_clock_a_little_ahead_is_not_refused() -> None:
    ahead = (NOW + timedelta(minutes=4)).isoformat()
    assert parse_chapter(chapter(createdAt=ahead, updatedAt=ahead), now=NOW).chapter == "1"
    # A far-future publishAt is how MangaDex parks link-only chapters: not a bound.
    parked = parse_chapter(chapter(publishAt="2099-01-01T00:00:00+00:00",
                                   externalUrl="https://example.org/1"), now=NOW)
    assert parked.readable_at < NOW


@pytest.mark.parametrize(("attrs", "field"), [
    ({"lastChapter": "9" * 20}, "lastChapter"), ({"status": "s" * 21}, "status"),
    ({"contentRating": "r" * 17}, "contentRating"),
    ({"updatedAt": "9999-12-31T23:59:59+00:00"}, "updatedAt"),
    ({"tags": [{"id": "391b0423-d847-456f-aff0-8b0cfc03066b", "type": "tag", "attributes": {
        "name": {"en": "g" * 101}, "group": "genre"}}]}, "tags"),
])
def test_manga_fields_out_of_bounds_name_their_field(attrs: dict[str, Any], field: str) -> None:
    with pytest.raises(ItemError) as caught:
        parse_manga(manga(**attrs), now=NOW)
    assert caught.value.field == field
    assert caught.value.created_at is not None or field == "createdAt"


def test_records_at_their_bounds_make_triggers_the_server_accepts() -> None:
    long_title = "Ω" * bounds.TITLE_LEN + " and more"
    m = parse_manga(manga(title={"en": long_title}, lastChapter=str(bounds.INT_MAX),
                          status="s" * bounds.STATUS_LEN), now=NOW)
    row = manga_row(m)
    assert len(row.title) == bounds.TITLE_LEN and row.total_chapters == bounds.INT_MAX
    triggers.NewManga.model_validate({"manga_id": 1, "title": row.title})
    older = {"status": "x" * bounds.STATUS_LEN, "title": "Ж" * bounds.TITLE_LEN}
    message = _update_message(older, row)
    assert message is not None
    triggers.MangaUpdate.model_validate({"manga_id": 1, "title": row.title, "message": message})

    info = MangaInfo(1, MANGA_ID, row.title, NOW - timedelta(days=1), None)
    for label in ("999999999.999", "x" * bounds.LABEL_LEN, "12a", None):
        c = parse_chapter(chapter(chapter=label, title="t" * 600,
                                  translatedLanguage="y" * bounds.LANGUAGE_LEN), now=NOW)
        dedup, payload = _payload(c, info)
        triggers.NewChapter.model_validate({**payload, "dedup_key": dedup})


def test_the_schema_the_checks_and_the_server_share_one_definition() -> None:
    assert tables.chapters.c.label.type.length == bounds.LABEL_LEN
    assert tables.chapters.c.volume.type.length == bounds.VOLUME_LEN
    assert tables.chapters.c.translated_language.type.length == bounds.LANGUAGE_LEN
    assert tables.chapters.c.chapter_number.type.precision == bounds.NUMBER_PRECISION
    assert tables.manga.c.status.type.length == bounds.STATUS_LEN
    assert tables.genres.c.name.type.length == bounds.GENRE_NAME_LEN
    assert (triggers.MAX_LABEL, triggers.MAX_TITLE, triggers.MAX_CHAPTER) == (
        bounds.TRIGGER_LABEL_LEN, bounds.TRIGGER_TITLE_LEN, bounds.TRIGGER_CHAPTER_LEN)
