"""A regression corpus of real MangaDex bodies (2024 and 2026 shapes, sources in
fixtures/mangadex/corpus/SOURCES.md): every item parses, and every field we keep is
asserted against the raw JSON, not against a value copied into the test."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mangasync_pipeline.mangadex.mapping import manga_row, total_chapters
from mangasync_pipeline.mangadex.models import (
    Chapter,
    parse_chapter,
    parse_chapter_number,
    parse_collection,
    parse_entity,
    parse_manga,
)
from mangasync_pipeline.sync.chapter_rules import PairState, decide

FIXTURES = Path(__file__).parent / "fixtures" / "mangadex"
CHAPTER_BODIES = [
    "corpus/2024-feed-mob-psycho.json",
    "corpus/2024-feed-manga-expanded-two-groups-one-label.json",
    "chapter-list.json",
    "manga-feed-en-default-order.json",
    "manga-feed-external-url-chapters.json",
]
MANGA_LISTS = ["manga-list-includes-cover_art-author.json",
               "manga-list-search-includes-cover_art-page1.json"]
MANGA_ENTITIES = ["manga-get-single.json", "manga-get-single-includes-cover_art-2023.json",
                  "manga-random-empty-description-array.json"]


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_the_corpus_sources_name_every_body() -> None:
    sources = (FIXTURES / "corpus" / "SOURCES.md").read_text(encoding="utf-8")
    for name in CHAPTER_BODIES + MANGA_LISTS + MANGA_ENTITIES:
        assert Path(name).name in sources, name


def _rels(raw: dict[str, Any], kind: str) -> list[str]:
    return [r["id"] for r in raw["relationships"] if r["type"] == kind]


@pytest.mark.parametrize("name", CHAPTER_BODIES)
def test_chapter_bodies_parse_field_for_field(name: str) -> None:
    body = load(name)
    page = parse_collection(body, "/chapter", parse_chapter)
    assert page.skipped == 0 and len(page.items) == len(body["data"])
    assert (page.total, page.limit, page.offset) == (body["total"], body["limit"],
                                                     body["offset"])
    for raw, chapter in zip(body["data"], page.items, strict=True):
        a = raw["attributes"]
        assert chapter.id == raw["id"]
        assert chapter.manga_id == _rels(raw, "manga")[0]
        assert chapter.group_ids == tuple(_rels(raw, "scanlation_group"))
        assert chapter.uploader_id == (_rels(raw, "user") or [None])[0]
        assert chapter.chapter == (a["chapter"] or None)
        assert chapter.number == parse_chapter_number(a["chapter"])
        assert chapter.volume == a["volume"] and chapter.title == (a["title"] or None)
        assert chapter.translated_language == a["translatedLanguage"]
        assert chapter.external_url == a["externalUrl"] and chapter.pages == a["pages"]
        assert chapter.is_unavailable is (a.get("isUnavailable") is True)  # absent in 2024
        assert chapter.publish_at == when(a["publishAt"])
        assert chapter.readable_at == when(a["readableAt"])
        assert chapter.created_at == when(a["createdAt"])
        assert chapter.updated_at == when(a["updatedAt"])
        assert chapter.version == a["version"]


def test_real_link_chapters_are_readable_at_once_and_are_chapters() -> None:
    body = load("manga-feed-external-url-chapters.json")
    links = [c for c in parse_collection(body, "/f", parse_chapter).items if c.external_url]
    assert links and all(c.pages == 0 and c.readable_at == c.publish_at for c in links)
    assert all((c.publish_at - c.created_at).total_seconds() <= 3 for c in links)


def test_two_groups_releasing_one_real_label_announce_once() -> None:
    body = load("corpus/2024-feed-manga-expanded-two-groups-one-label.json")
    items: list[Chapter] = parse_collection(body, "/chapter", parse_chapter).items
    assert {c.chapter for c in items} == {"1"} and len({c.group_ids for c in items}) == 2
    catalogued = min(c.readable_at for c in items)  # both became readable after it
    announced = decide(PairState(catalogued), items).announce
    assert [c.id for c in announced] == [min(items, key=lambda c: c.readable_at).id]


@pytest.mark.parametrize("name", MANGA_LISTS + MANGA_ENTITIES)
def test_manga_bodies_parse_and_map_field_for_field(name: str) -> None:
    body = load(name)
    raws = body["data"] if isinstance(body["data"], list) else [body["data"]]
    if isinstance(body["data"], list):
        items = parse_collection(body, "/manga", parse_manga).items
    else:
        items = [parse_entity(body, "/manga/x", parse_manga)]
    assert len(items) == len(raws)
    for raw, item in zip(raws, items, strict=True):
        a = raw["attributes"]
        assert item.id == raw["id"] and item.title == a["title"]
        assert item.status == a["status"] and item.year == a["year"]
        assert item.content_rating == a["contentRating"]
        assert item.original_language == a["originalLanguage"]
        assert item.alt_titles == tuple((k, v) for alt in a["altTitles"] for k, v in alt.items())
        assert item.description == (a["description"] or {})  # `[]` is an empty map
        assert item.available_languages == tuple(
            x for x in a["availableTranslatedLanguages"] if x is not None)
        assert item.created_at == when(a["createdAt"])
        assert item.updated_at == when(a["updatedAt"])
        assert {t.id for t in item.tags} == {t["id"] for t in a["tags"]}
        assert item.latest_uploaded_chapter == a.get("latestUploadedChapter")
        row = manga_row(item)
        assert row.total_chapters == total_chapters(a["lastChapter"])
        assert row.title in {*a["title"].values(), *(v for alt in a["altTitles"]
                                                     for v in alt.values())}
        assert set(row.genres) == {t["attributes"]["name"]["en"] for t in a["tags"]
                                   if t["attributes"]["group"] == "genre"}


def test_null_shapes_seen_in_real_bodies_do_not_cost_the_item() -> None:
    """`links: null`, a null among availableTranslatedLanguages and a tag whose
    description is `[]`, grafted onto a real body."""
    body = load("manga-get-single.json")
    a = body["data"]["attributes"]
    a["links"] = None
    a["availableTranslatedLanguages"] = [None, *a["availableTranslatedLanguages"]]
    a["tags"][0]["attributes"]["description"] = []
    item = parse_entity(body, "/manga/x", parse_manga)
    assert None not in item.available_languages and len(item.tags) == len(a["tags"])
