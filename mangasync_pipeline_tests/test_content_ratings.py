"""MANGASYNC_CONTENT_RATINGS: every catalogue query asks MangaDex for exactly those ratings, and
the chapter sync follows exactly the manga the catalogue holds. Both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from mangasync_pipeline.cli import cli
from mangasync_pipeline.config import ConfigError, Settings
from mangasync_pipeline.db.tables import chapters, manga
from mangasync_pipeline.mangadex.client import ALL_CONTENT_RATINGS
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.sync.catalogue import (
    PollCursor,
    detect_changes,
    import_created_range,
    initial_sync,
)
from mangasync_pipeline.sync.chapters import sync_chapter_window
from mangasync_pipeline_tests.sync_helpers import Pipeline, client_for, settings_for

DAY = datetime(2023, 5, 5, tzinfo=UTC)
DEFAULT = ("safe", "suggestive", "erotica")


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, SimulatorAdmin]]:
    with Simulator(seed=11, manga_count=50, rate_limit=None, chapters_per_manga=0) as s, \
            SimulatorAdmin(s.url) as admin:
        yield s, admin


def one_of_each(admin: SimulatorAdmin, created: datetime) -> dict[str, str]:
    """A manga of every rating created at `created`: rating -> MangaDex id."""
    return {rating: admin.add_manga(contentRating=rating, createdAt=created.isoformat(),
                                    title={"en": f"A {rating} manga"})["ids"][0]
            for rating in ALL_CONTENT_RATINGS}


def catalogued(engine: Engine, ids: dict[str, str]) -> set[str]:
    with engine.connect() as conn:
        have = set(conn.execute(select(manga.c.mangadex_id).where(
            manga.c.mangadex_id.in_(list(ids.values())))).scalars())
    return {rating for rating, i in ids.items() if i in have}


def test_the_setting_defaults_to_mangadex_default_and_rejects_unknown_ratings() -> None:
    assert Settings.from_env({}).content_ratings == DEFAULT
    assert Settings.from_env({"MANGASYNC_CONTENT_RATINGS": "Pornographic, safe"}
                             ).content_ratings == ("safe", "pornographic")
    with pytest.raises(ConfigError) as bad:
        Settings.from_env({"MANGASYNC_CONTENT_RATINGS": "safe,adult"})
    assert str(bad.value).startswith("MANGASYNC_CONTENT_RATINGS='safe,adult': ")
    assert "\n" not in str(bad.value)


def test_partition_imports_hold_exactly_the_configured_ratings(
        sim: tuple[Simulator, SimulatorAdmin], db_url: str, engine: Engine) -> None:
    s, admin = sim
    ids = one_of_each(admin, DAY + timedelta(hours=3))
    settings = settings_for(db_url, s.url)
    window = (DAY, DAY + timedelta(days=1))
    with client_for(settings) as client:
        import_created_range(engine, client, *window, content_ratings=("safe",))
        assert catalogued(engine, ids) == {"safe"}
        import_created_range(engine, client, *window)  # the default
        assert catalogued(engine, ids) == set(DEFAULT)
        import_created_range(engine, client, *window, content_ratings=ALL_CONTENT_RATINGS)
        assert catalogued(engine, ids) == set(ALL_CONTENT_RATINGS)


def test_initial_sync_and_detection_ask_for_the_configured_ratings(
        sim: tuple[Simulator, SimulatorAdmin], db_url: str, engine: Engine) -> None:
    s, admin = sim
    settings = settings_for(db_url, s.url)
    now = datetime.now(UTC).replace(microsecond=0)
    newest = one_of_each(admin, now - timedelta(minutes=5))
    with client_for(settings) as client:
        initial_sync(engine, client, 4)
        assert catalogued(engine, newest) == set(DEFAULT)
        initial_sync(engine, client, 4, force=True, content_ratings=ALL_CONTENT_RATINGS)
        assert catalogued(engine, newest) == set(ALL_CONTENT_RATINGS)

        later = one_of_each(admin, now)
        cursor = PollCursor(now - timedelta(minutes=1), now - timedelta(minutes=1))
        found = detect_changes(engine, client, cursor, content_ratings=("safe", "erotica"))
        assert {i for ids in found.new_by_day.values() for i in ids} == {
            later["safe"], later["erotica"]}
        found = detect_changes(engine, client, cursor, content_ratings=ALL_CONTENT_RATINGS)
        assert {i for ids in found.new_by_day.values() for i in ids} == set(later.values())


def test_dagster_catalogue_runs_use_the_setting(
        sim: tuple[Simulator, SimulatorAdmin], db_url: str, engine: Engine) -> None:
    s, admin = sim
    ids = one_of_each(admin, DAY + timedelta(hours=1))
    pipeline = Pipeline(settings_for(db_url, s.url, content_ratings=("safe", "pornographic")))
    result = pipeline.run("catalogue_job", partition_key=DAY.date().isoformat())
    assert catalogued(engine, ids) == {"safe", "pornographic"}
    shown = result.asset_materializations_for_node("catalogue")[0].metadata["content_ratings"]
    assert shown.value == "safe, pornographic"  # what the Dagster UI shows for the run


def test_chapter_sync_follows_exactly_the_catalogued_manga(
        sim: tuple[Simulator, SimulatorAdmin], db_url: str, engine: Engine) -> None:
    s, admin = sim
    now = datetime.now(UTC).replace(microsecond=0)
    ids = one_of_each(admin, DAY)
    settings = settings_for(db_url, s.url)
    with client_for(settings) as client:
        import_created_range(engine, client, DAY, DAY + timedelta(days=1),
                             content_ratings=("safe", "pornographic"))
        made = admin.add_chapters([
            {"manga": ids[r], "chapter": "1", "language": "en",
             "createdAt": (now - timedelta(minutes=2)).isoformat()}
            for r in ALL_CONTENT_RATINGS])
        sync_chapter_window(engine, client, ("en",), now - timedelta(minutes=10),
                            now + timedelta(minutes=1), lookback=timedelta(hours=1),
                            use_cursor=False)
    with engine.connect() as conn:
        stored = set(conn.execute(select(chapters.c.mangadex_chapter_id)).scalars())
    by_rating = dict(zip(ALL_CONTENT_RATINGS, made, strict=True))
    # Chapters of catalogued manga, whatever their rating; none of manga not held.
    assert stored == {by_rating["safe"], by_rating["pornographic"]}


def test_status_shows_the_content_ratings(db_url: str) -> None:
    result = CliRunner().invoke(cli, ["status"], env={
        "DATABASE_URL": db_url, "MANGASYNC_CONTENT_RATINGS": "safe,suggestive"})
    assert result.exit_code == 0, result.output
    assert "(content ratings safe, suggestive)" in result.output
    as_json = CliRunner().invoke(cli, ["status", "--json"], env={"DATABASE_URL": db_url})
    assert '"content_ratings": [\n    "safe",\n    "suggestive",\n    "erotica"\n  ]' in (
        as_json.output)
