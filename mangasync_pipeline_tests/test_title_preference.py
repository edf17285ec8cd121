"""MANGASYNC_TITLE_LANGUAGE: which title a manga is shown under, and that changing the
setting is not news (no MANGA_UPDATE), on real MangaDex bodies and both databases."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mangasync_pipeline.config import ConfigError, Settings, utcnow
from mangasync_pipeline.db.tables import manga
from mangasync_pipeline.defs.resources import MangaDexResource
from mangasync_pipeline.mangadex.client import open_client
from mangasync_pipeline.mangadex.mapping import manga_row, manga_title
from mangasync_pipeline.mangadex.models import Manga, parse_collection, parse_manga
from mangasync_pipeline.sync.catalogue_store import NotifyPolicy, upsert_manga
from mangasync_pipeline_tests.sync_helpers import outbox_rows

FIXTURES = Path(__file__).parent / "fixtures" / "mangadex"
GLUTTONY = "30196491-8fc2-4961-8886-a58f898b1b3e"


def real_manga() -> dict[str, Manga]:
    body = json.loads((FIXTURES / "manga-list-search-includes-cover_art-page1.json")
                      .read_text(encoding="utf-8"))
    return {m.id: m for m in parse_collection(body, "/manga", parse_manga).items}


def raw(manga_id: str) -> dict[str, Any]:
    body = json.loads((FIXTURES / "manga-list-search-includes-cover_art-page1.json")
                      .read_text(encoding="utf-8"))
    return next(m for m in body["data"] if m["id"] == manga_id)


def test_a_romanised_main_title_gives_way_to_the_first_english_alternative() -> None:
    item, attrs = real_manga()[GLUTTONY], raw(GLUTTONY)["attributes"]
    first_en = next(a["en"] for a in attrs["altTitles"] if "en" in a)
    assert manga_title(item) == attrs["title"]["ja-ro"]  # the default: nothing changes
    assert manga_title(item, "en") == first_en
    assert manga_row(item, title_language="en").title == first_en


def test_a_main_title_that_is_not_romanised_stays() -> None:
    item = parse_manga({
        "id": "9d3d3403-1a87-4737-9803-bc3d99db1424", "type": "manga", "attributes": {
            "title": {"en": "Solo Leveling"}, "altTitles": [{"en": "Only I Level Up"}],
            "createdAt": "2019-01-01T00:00:00+00:00", "updatedAt": "2019-01-01T00:00:00+00:00"}})
    assert manga_title(item, "en") == "Solo Leveling"
    romanised = replace(item, title={"ko-ro": "Na Honjaman Level-Up"},
                        alt_titles=(("ko", "나 혼자만 레벨업"), ("en", "Solo Leveling"),
                                    ("en", "Only I Level Up")))
    assert manga_title(romanised, "en") == "Solo Leveling"
    assert manga_title(romanised, "fr") == "Na Honjaman Level-Up"  # no French alternative


def test_the_setting_is_validated() -> None:
    assert Settings.from_env({}).title_language is None
    assert Settings.from_env({"MANGASYNC_TITLE_LANGUAGE": "en"}).title_language == "en"
    with pytest.raises(ConfigError, match="MANGASYNC_TITLE_LANGUAGE"):
        Settings.from_env({"MANGASYNC_TITLE_LANGUAGE": "English"})


def test_changing_the_preference_sends_no_manga_update(engine: Engine) -> None:
    items = list(real_manga().values())
    policy = NotifyPolicy(new_manga=False, updates=True)
    with engine.begin() as conn:
        upsert_manga(conn, [manga_row(m) for m in items], utcnow(), policy)
    with engine.begin() as conn:
        result = upsert_manga(conn, [manga_row(m, title_language="en") for m in items],
                              utcnow(), policy)
    assert result.updated and result.notifications == 0
    with engine.connect() as conn:
        title = conn.execute(select(manga.c.title).where(manga.c.mangadex_id == GLUTTONY)
                             ).scalar()
    assert title == manga_title(real_manga()[GLUTTONY], "en")
    assert outbox_rows(engine, "manga-update") == []
    # Back to the default: silent again. A rename on MangaDex is still news.
    with engine.begin() as conn:
        assert upsert_manga(conn, [manga_row(m) for m in items], utcnow(),
                            policy).notifications == 0
    renamed = replace(real_manga()[GLUTTONY], title={"ja-ro": "Boushoku no Berserk (Renamed)"},
                      updated_at=datetime(2026, 6, 1, tzinfo=UTC))
    with engine.begin() as conn:
        assert upsert_manga(conn, [manga_row(renamed)], utcnow(), policy).notifications == 1
    assert [r.payload["title"] for r in outbox_rows(engine, "manga-update")] == [
        "Boushoku no Berserk (Renamed)"]


def test_the_setting_reaches_every_client_that_maps_rows(db_url: str) -> None:
    """The CLI's client and the Dagster resource (shown in the UI) both map with the setting."""
    settings = Settings.from_env({"MANGASYNC_TITLE_LANGUAGE": "en", "DATABASE_URL": db_url,
                                  "MANGADEX_API_URL": "http://127.0.0.1:9"})
    with open_client(settings) as client:
        assert client.title_language == "en"
    assert MangaDexResource(settings).client().title_language == "en"
    unset = Settings.from_env({"DATABASE_URL": db_url, "MANGADEX_API_URL": "http://127.0.0.1:9"})
    assert MangaDexResource(unset).client().title_language is None
