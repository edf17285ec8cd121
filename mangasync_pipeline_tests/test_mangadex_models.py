"""Parsing real MangaDex responses, hostile text and the mapping to MangaHub rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mangasync_pipeline.mangadex.dates import format_since
from mangasync_pipeline.mangadex.errors import MalformedResponseError
from mangasync_pipeline.mangadex.mapping import manga_row, total_chapters
from mangasync_pipeline.mangadex.models import (
    Chapter,
    Manga,
    parse_chapter,
    parse_chapter_number,
    parse_collection,
    parse_entity,
    parse_manga,
    parse_tag,
)
from mangasync_pipeline.mangadex.sanitize import clean_text

FIXTURES = Path(__file__).parent / "fixtures" / "mangadex"
UPLOADS = "https://uploads.example"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_every_fixture_is_known_here() -> None:
    names = {p.name for p in FIXTURES.glob("*.json")}
    assert len(names) == 13
    assert names == set(PARSERS) | set(ERRORS)


PARSERS = {
    "chapter-list.json": "chapters",
    "manga-feed-en-default-order.json": "chapters",
    "manga-feed-external-url-chapters.json": "chapters",
    "manga-feed-nonexistent-manga-empty-200.json": "chapters",
    "manga-list-includes-cover_art-author.json": "manga-list",
    "manga-list-search-includes-cover_art-page1.json": "manga-list",
    "manga-tag-list.json": "tags",
    "manga-get-single.json": "manga",
    "manga-get-single-includes-cover_art-2023.json": "manga",
    "manga-random-empty-description-array.json": "manga",
}
ERRORS = {
    "error-404-manga-not-found.json",
    "error-404-manga-removed.json",
    "error-404-at-home-chapter-not-found.json",
}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_success_fixture_parses_without_skipping(name: str) -> None:
    payload = load(name)
    kind = PARSERS[name]
    if kind == "manga":
        manga = parse_entity(payload, "/manga/{id}", parse_manga)
        assert manga.id == payload["data"]["id"]
        manga_row(manga, UPLOADS)
        return
    parser = {"chapters": parse_chapter, "manga-list": parse_manga, "tags": parse_tag}[kind]
    page = parse_collection(payload, "/x", parser)
    assert page.skipped == 0
    assert len(page.items) == len(payload["data"])
    assert page.total == payload["total"]
    if kind == "manga-list":
        for manga in page.items:
            assert isinstance(manga, Manga)
            manga_row(manga, UPLOADS)


def test_chapter_quirks_from_real_feeds() -> None:
    external = parse_collection(load("manga-feed-external-url-chapters.json"), "/f", parse_chapter)
    chapter = external.items[0]
    assert isinstance(chapter, Chapter)
    assert chapter.pages == 0
    assert chapter.external_url is not None and chapter.external_url.startswith("https://")
    assert chapter.number == Decimal("15")
    assert chapter.manga_id == "32d76d19-8a05-4db0-9fc2-e0b0648fe9d0"
    listed = parse_collection(load("chapter-list.json"), "/chapter", parse_chapter).items
    assert listed[0].readable_at == datetime(2018, 1, 15, 16, 38, 24, tzinfo=UTC)
    assert listed[0].group_ids == ("caf0d1da-a790-49d0-833c-ce74d651c8a1",)


def chapter_obj(**attrs: Any) -> dict[str, Any]:
    base = {
        "volume": None,
        "chapter": "1",
        "title": "",
        "translatedLanguage": "en",
        "externalUrl": None,
        "publishAt": "2024-01-02T03:04:05+00:00",
        "readableAt": "2024-01-02T03:04:05+00:00",
        "createdAt": "2024-01-01T00:00:00+00:00",
        "updatedAt": "2024-01-01T00:00:00+00:00",
        "pages": 3,
        "version": 1,
    }
    base.update(attrs)
    base = {k: v for k, v in base.items() if v is not ...}
    return {
        "id": "0aaf8b27-0013-4ae0-8935-91a089466874",
        "type": "chapter",
        "attributes": base,
        "relationships": [{"id": "127820bd-8fc5-47b8-8782-e680317bf41d", "type": "manga"}],
    }


@pytest.mark.parametrize(
    ("label", "number"),
    [
        ("1", Decimal("1")),
        ("56.1", Decimal("56.1")),
        (" 42.5 ", Decimal("42.5")),
        ("EXTRA", None),
        ("", None),
        (None, None),
        # MangaDex's label pattern allows a letter after the number: "12a" orders as 12.
        ("12a", Decimal("12")),
        ("10.5b", Decimal("10.5")),
        ("12ab", None),
        ("a12", None),
    ],
)
def test_chapter_number_keeps_label_and_parses_only_real_numbers(
    label: str | None, number: Decimal | None
) -> None:
    assert parse_chapter_number(label) == number
    chapter = parse_chapter(chapter_obj(chapter=label))
    assert chapter.number == number
    assert chapter.chapter == (label.strip() if label and label.strip() else None)


def test_oneshot_chapter_has_no_label_and_missing_is_unavailable_is_false() -> None:
    chapter = parse_chapter(chapter_obj(chapter=None, title="Oneshot", isUnavailable=...))
    assert chapter.chapter is None and chapter.number is None
    assert chapter.title == "Oneshot"
    assert chapter.is_unavailable is False


def test_readable_at_falls_back_to_the_documented_rule() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    future_link = parse_chapter(
        chapter_obj(
            readableAt=...,
            publishAt="2099-01-01T00:00:00+00:00",
            externalUrl="https://example.com/c/1",
        ),
        now=now,
    )
    assert future_link.readable_at == future_link.created_at
    scheduled = parse_chapter(
        chapter_obj(readableAt=None, publishAt="2099-01-01T00:00:00+00:00"), now=now
    )
    assert scheduled.readable_at == datetime(2099, 1, 1, tzinfo=UTC)


def test_feed_without_manga_relationship_uses_the_feeds_manga() -> None:
    obj = chapter_obj()
    obj["relationships"] = []
    chapter = parse_chapter(obj, manga_id="801513ba-a712-498c-8f57-cae55b38cc92")
    assert chapter.manga_id == "801513ba-a712-498c-8f57-cae55b38cc92"


def test_one_bad_item_is_skipped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    payload = load("chapter-list.json")
    payload["data"][1]["attributes"]["publishAt"] = "yesterday-ish"
    bad_id = payload["data"][1]["id"]
    del payload["data"][3]["attributes"]
    no_attrs_id = payload["data"][3]["id"]
    with caplog.at_level("WARNING", logger="mangasync.mangadex"):
        page = parse_collection(payload, "/chapter", parse_chapter)
    assert len(page.items) == 3
    assert page.skipped == 2
    assert page.skipped_ids == (bad_id, no_attrs_id)
    assert bad_id in caplog.text and no_attrs_id in caplog.text


def test_manga_without_attributes_is_skipped_in_a_list() -> None:
    payload = load("manga-list-search-includes-cover_art-page1.json")
    del payload["data"][0]["attributes"]
    page = parse_collection(payload, "/manga", parse_manga)
    assert page.skipped == 1 and len(page.items) == 1


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        ([], "not an object"),
        ({"result": "error", "errors": []}, "result is 'error'"),
        ({"result": "ok", "response": "collection", "data": {}}, "data is a dict"),
        ({"result": "ok", "response": "collection"}, "data is a NoneType"),
        ({"result": "ok", "response": "entity", "data": []}, "expected 'collection'"),
    ],
)
def test_malformed_envelope_names_endpoint_and_problem(payload: Any, what: str) -> None:
    with pytest.raises(MalformedResponseError) as err:
        parse_collection(payload, "/manga/{id}/feed", parse_chapter)
    assert "/manga/{id}/feed" in str(err.value)
    assert what in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_entity_is_an_error_not_a_skip() -> None:
    payload = load("manga-get-single.json")
    del payload["data"]["attributes"]
    with pytest.raises(MalformedResponseError, match=r"/manga/\{id\}.*no attributes"):
        parse_entity(payload, "/manga/{id}", parse_manga)


def test_hostile_text_comes_out_clean_and_capped() -> None:
    payload = load("manga-get-single.json")
    attrs = payload["data"]["attributes"]
    attrs["title"] = {"en": "Bad\x00 Title\x07\x1b[31m" + "T" * 2000}
    attrs["description"] = {"en": "Line one\r\nline\ttwo\x00\u202e" + "d" * 50_000}
    attrs["altTitles"] = [{"en": "e\u0301te\ud800"}]
    payload["data"]["relationships"].insert(
        0,
        {
            "id": "11111111-2222-3333-4444-555555555555",
            "type": "author",
            "attributes": {"name": "Eve\x00\x01" + "n" * 500},
        },
    )
    manga = parse_entity(payload, "/manga/{id}", parse_manga)
    title = manga.title["en"]
    assert title.startswith("Bad Title[31mTTT")
    assert len(title) == 500
    description = manga.description["en"]
    assert len(description) == 10_000
    assert description.startswith("Line one\nline\ttwo\u202e")
    assert "\x00" not in description
    assert manga.alt_titles == (("en", "\u00e9te"),)  # NFC, lone surrogate dropped
    assert manga.authors[0].name is not None and len(manga.authors[0].name) == 200
    assert manga.authors[0].name.startswith("Even")


def test_clean_text_keeps_newline_and_tab_only() -> None:
    assert clean_text("a\x00b\x7fc\x85d\n\te", 100) == "abcd\n\te"
    assert clean_text(["not", "text"], 100) == ""


def test_berserk_maps_to_a_manga_row() -> None:
    manga = parse_entity(load("manga-get-single.json"), "/manga/{id}", parse_manga)
    row = manga_row(manga, UPLOADS)
    assert row.title == "Berserk"  # only ja-ro title: first available wins over an English alt
    assert row.author is None  # relationships not expanded
    assert row.total_chapters is None  # lastChapter ""
    assert row.cover_url is None  # cover_art without fileName
    assert row.slug_base == "berserk"
    assert row.description is not None and row.description.startswith("Guts, known as")
    assert "Action" in row.genres and all(g != "Award Winning" for g in row.genres)
    assert row.mangadex_updated_at == datetime(2026, 2, 26, 16, 36, 44, tzinfo=UTC)


def test_expanded_manga_maps_authors_and_cover() -> None:
    page = parse_collection(load("manga-list-includes-cover_art-author.json"), "/m", parse_manga)
    row = manga_row(page.items[0], UPLOADS)
    assert row.author == "FriFri1213"
    assert row.cover_url == (
        f"{UPLOADS}/covers/d1e038c4-d931-4525-9b1b-b943e2a7d7e1/"
        "6a264b94-e30e-4d1d-8f75-817aa7e478b9.jpg"
    )
    assert row.description is None  # description {}
    bleach = parse_entity(
        load("manga-get-single-includes-cover_art-2023.json"), "/manga/{id}", parse_manga
    )
    assert manga_row(bleach, UPLOADS).total_chapters == 686


def test_empty_description_array_is_no_description() -> None:
    manga = parse_entity(
        load("manga-random-empty-description-array.json"), "/manga/{id}", parse_manga
    )
    assert manga.description == {}
    assert manga_row(manga).description is None


@pytest.mark.parametrize(
    ("last", "total"), [("", None), (None, None), ("45.5", 45), ("686", 686), ("EXTRA", None)]
)
def test_total_chapters_never_zero_by_accident(last: str | None, total: int | None) -> None:
    assert total_chapters(last) == total


def test_title_falls_back_to_english_alt_title_and_slug_never_empty() -> None:
    payload = load("manga-get-single.json")
    attrs = payload["data"]["attributes"]
    attrs["title"] = {}
    row = manga_row(parse_entity(payload, "/manga/{id}", parse_manga))
    assert row.title == "Berserk"
    attrs["title"] = {"ja": "ベルセルク"}
    row = manga_row(parse_entity(payload, "/manga/{id}", parse_manga))
    assert row.title == "ベルセルク"
    assert row.slug_base == "manga-801513ba"
    attrs["title"] = {"en": "Ünïcödé: The  Story!!  " + "x" * 100}
    slug = manga_row(parse_entity(payload, "/manga/{id}", parse_manga)).slug_base
    assert slug.startswith("unicode-the-story-xxx") and len(slug) <= 80


def test_since_format_is_mangadex_exact() -> None:
    assert format_since(datetime(2024, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC)) == "2024-01-02T03:04:05"
    assert format_since(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05"
