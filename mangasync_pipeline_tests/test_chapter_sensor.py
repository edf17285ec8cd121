"""`new_chapters_sensor` evaluated by Dagster against the simulator over HTTP, on a real
instance and both databases: two requests a tick, no run for an empty window, a run for a
window with new chapters, and a skip naming the run already in flight."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    build_sensor_context,
    instance_for_test,
)
from sqlalchemy import Engine, select

from mangasync_pipeline.db.tables import chapters
from mangasync_pipeline.definitions import build_definitions
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.sync import outbox
from mangasync_pipeline.sync.catalogue import import_ids
from mangasync_pipeline.sync.catalogue_store import NotifyPolicy
from mangasync_pipeline_tests.sync_helpers import client_for, outbox_rows, settings_for

FAR_FUTURE = "2099-01-01T00:00:00"


class SensorDriver:
    """Ticks the sensor as the daemon does (cursor carried over) and counts its requests."""

    def __init__(self, defs: Definitions, instance: DagsterInstance, admin: SimulatorAdmin
                 ) -> None:
        self.defs, self.instance, self.admin = defs, instance, admin
        self.cursor: str | None = None
        self.requests_per_tick: list[int] = []

    def tick(self) -> Any:
        sensor = self.defs.resolve_sensor_def("new_chapters_sensor")
        before = self.admin.stats()["total"]
        context = build_sensor_context(instance=self.instance, cursor=self.cursor,
                                       resources=dict(self.defs.resources or {}),
                                       definitions=self.defs)
        result = sensor.evaluate_tick(context)
        self.requests_per_tick.append(self.admin.stats()["total"] - before)
        self.cursor = result.cursor
        return result

    def run(self, request: Any) -> Any:
        job = self.defs.resolve_job_def("new_chapters_job")
        return job.execute_in_process(instance=self.instance, partition_key=request.partition_key,
                                      run_config=request.run_config, tags=request.tags)


@pytest.fixture
def world(db_url: str, engine: Engine) -> Iterator[tuple[SensorDriver, SimulatorAdmin,
                                                          list[str], str]]:
    """Two catalogued manga and one the catalogue does not hold; a real Dagster instance."""
    with Simulator(seed=3, manga_count=30, rate_limit=None, chapters_per_manga=0) as sim, \
            SimulatorAdmin(sim.url) as admin, instance_for_test() as instance:
        ours = [admin.add_manga(contentRating="safe")["ids"][0] for _ in range(2)]
        other = admin.add_manga(contentRating="safe")["ids"][0]
        settings = settings_for(db_url, sim.url)
        with client_for(settings) as client:
            import_ids(engine, client, ours, policy=NotifyPolicy(new_manga=False))
        yield SensorDriver(build_definitions(settings), instance, admin), admin, ours, other


def stored(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(chapters.c.mangadex_chapter_id)).scalars())


def test_an_empty_window_costs_two_requests_and_no_run(
        world: tuple[SensorDriver, SimulatorAdmin, list[str], str]) -> None:
    driver, admin, ours, other = world
    # Chapters that are not news for this catalogue: another language, a manga not held,
    # and one scheduled for later.
    admin.add_chapters([
        {"manga": ours[0], "chapter": "1", "language": "fr"},
        {"manga": other, "chapter": "1", "language": "en"},
        {"manga": ours[1], "chapter": "9", "language": "en",
         "publishAt": (datetime.now(UTC) + timedelta(hours=2)).isoformat()},
    ])
    for _ in range(3):
        result = driver.tick()
        assert not result.run_requests
        assert result.skip_message.startswith("no new chapters since ")
    assert driver.requests_per_tick == [2, 2, 2]


def test_new_chapters_get_one_run_for_their_window_and_are_stored_once(
        world: tuple[SensorDriver, SimulatorAdmin, list[str], str], engine: Engine) -> None:
    driver, admin, ours, _ = world
    assert not driver.tick().run_requests
    made = admin.add_chapters([
        {"manga": ours[0], "chapter": "1", "language": "en"},
        # Link-only, parked at a far-future publishAt: readable from its creation.
        {"manga": ours[1], "chapter": "4", "language": "en", "publishAt": FAR_FUTURE,
         "externalUrl": "https://example.org/ch4"},
    ])
    result = driver.tick()
    assert driver.requests_per_tick[-1] == 2
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    today = datetime.now(UTC).date().isoformat()
    assert request.partition_key == today
    since = request.run_config["ops"]["new_chapters"]["config"]["since"]
    assert datetime.fromisoformat(since) <= datetime.now(UTC)
    assert request.tags["mangasync/chapters"] == "2"
    assert int(request.tags["dagster/max_runtime"]) > 0  # run monitoring bounds a hung run

    run = driver.run(request)
    assert run.success
    assert set(made) <= stored(engine)
    meta = run.asset_materializations_for_node("new_chapters")[0].metadata
    assert "(chapter sensor)" in meta["read"].value
    # The window is one page of each query; the rest are the two manga's one-time baselines.
    assert meta["mangadex_requests"].value - meta["baseline_feed_requests"].value == 2
    assert len(outbox_rows(engine, outbox.NEW_CHAPTER)) == 2

    # Stored now: the next ticks find nothing and request nothing.
    assert not driver.tick().run_requests
    assert not driver.tick().run_requests
    assert driver.requests_per_tick[-2:] == [2, 2]


def test_a_run_in_flight_for_the_partition_is_named_not_doubled(
        world: tuple[SensorDriver, SimulatorAdmin, list[str], str]) -> None:
    driver, admin, ours, _ = world
    driver.tick()
    admin.add_chapters([{"manga": ours[0], "chapter": "2", "language": "en"}])
    today = datetime.now(UTC).date().isoformat()
    running = driver.instance.create_run_for_job(
        job_def=driver.defs.resolve_job_def("new_chapters_job"),
        status=DagsterRunStatus.STARTED, tags={"dagster/partition": today})

    result = driver.tick()
    assert not result.run_requests
    assert running.run_id in result.skip_message and today in result.skip_message

    # Once that run is over, the chapter it did not store is asked for again.
    driver.instance.report_run_canceled(running)
    result = driver.tick()
    assert [r.partition_key for r in result.run_requests] == [today]


def test_an_unreachable_mangadex_is_a_skip_that_keeps_the_cursor(
        world: tuple[SensorDriver, SimulatorAdmin, list[str], str]) -> None:
    driver, admin, ours, _ = world
    driver.tick()
    kept = driver.cursor
    admin.set_faults(error_rate=1.0, error_status=503)
    try:
        result = driver.tick()
    finally:
        admin.clear_faults()
    assert not result.run_requests
    assert result.skip_message.startswith("MangaDex not reachable, cursor kept at ")
    assert "\n" not in result.skip_message
    assert driver.cursor == kept


def test_chapters_a_run_did_not_store_are_asked_for_again(
        world: tuple[SensorDriver, SimulatorAdmin, list[str], str], engine: Engine) -> None:
    driver, admin, ours, _ = world
    # Five minutes old (the first tick looks back an hour): older than the probe's overlap,
    # so only a cursor held at it sees it again.
    late = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="seconds")
    made = admin.add_chapters([{"manga": ours[1], "chapter": "3", "language": "en",
                                "createdAt": late}])
    first = driver.tick().run_requests
    assert len(first) == 1
    # That run never ran (it failed, or was lost): the next tick asks again, for the same window.
    again = driver.tick().run_requests
    assert [r.run_config for r in again] == [r.run_config for r in first]
    assert driver.run(again[0]).success
    assert set(made) <= stored(engine)
    assert not driver.tick().run_requests


def test_the_sensor_gets_past_a_second_holding_more_than_a_page(
        world: tuple[SensorDriver, SimulatorAdmin, list[str], str], engine: Engine) -> None:
    driver, admin, ours, other = world
    assert not driver.tick().run_requests
    crowded = (datetime.now(UTC) - timedelta(seconds=30)).replace(microsecond=0).isoformat()
    # 150 chapters of a manga not catalogued share one publishAt second: not news, but more
    # than the 100 a page holds.
    admin.add_chapters([{"manga": other, "chapter": str(n), "language": "en",
                         "createdAt": crowded, "publishAt": crowded} for n in range(1, 151)])
    assert not driver.tick().run_requests
    assert driver.requests_per_tick[-1] == 3  # the crowded second took one page more
    made = admin.add_chapters([{"manga": ours[0], "chapter": "1", "language": "en"}])
    result = driver.tick()
    assert len(result.run_requests) == 1, result.skip_message
    assert driver.run(result.run_requests[0]).success
    assert set(made) <= stored(engine)
    # Stored: nothing more to ask for. (While the crowded second is within the two-minute
    # overlap a tick costs its one extra page; no tick ever stops at it.)
    assert not driver.tick().run_requests
    assert driver.requests_per_tick[-1] <= 3
