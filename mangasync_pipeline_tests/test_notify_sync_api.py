"""`POST /api/manga/{ref}/sync`: the server records a request, Dagster's `manual_sync_sensor`
turns it into a `sync_manga_job` run against MangaDex (the simulator), and the reader following
the manga hears about what is new. The server itself never talks to MangaDex."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import DagsterInstance, RunRequest, build_sensor_context
from sqlalchemy import Engine, select

from mangasync_pipeline.db.tables import chapters, manga, mangadex_circuit
from mangasync_pipeline.definitions import build_definitions
from mangasync_pipeline.mangadex.simulator import Simulator
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.client import NotificationClient
from mangasync_pipeline.notify.testing import add_manga, fast_options, follow, server_settings
from mangasync_pipeline.notify.users import add_user
from mangasync_pipeline.sync.catalogue import SILENT, import_ids
from mangasync_pipeline_tests import web
from mangasync_pipeline_tests.sync_helpers import client_for, settings_for


def _tick(defs: Any, instance: DagsterInstance) -> list[RunRequest]:
    sensor = defs.resolve_sensor_def("manual_sync_sensor")
    context = build_sensor_context(instance=instance, resources=dict(defs.resources or {}),
                                   definitions=defs)
    return list(sensor.evaluate_tick(context).run_requests or [])


def _run(defs: Any, instance: DagsterInstance, request: RunRequest) -> Any:
    return defs.resolve_job_def(request.job_name or "sync_manga_job").execute_in_process(
        instance=instance, run_config=request.run_config, tags=request.tags)


def test_manual_sync_is_a_dagster_run_that_notifies_the_new_chapter(
        db_url: str, engine: Engine) -> None:
    with Simulator(seed=2, manga_count=3, rate_limit=None, chapters_per_manga=0) as sim:
        admin = f"{sim.url}/_sim"
        mid = web.post(f"{admin}/manga", json={
            "title": {"en": "Manual Sync"}, "createdAt": "2025-01-01T00:00:00",
            "contentRating": "safe"}).json()["ids"][0]
        web.post(f"{admin}/chapters", json=[
            {"manga": mid, "chapter": str(n), "createdAt": f"2025-01-0{n + 1}T00:00:00"}
            for n in range(1, 4)])
        with client_for(settings_for(db_url, sim.url)) as client:
            import_ids(engine, client, [mid], policy=SILENT)
        with engine.connect() as conn:
            local_id, slug = conn.execute(select(manga.c.id, manga.c.slug).where(
                manga.c.mangadex_id == mid)).one()
        user_id, token = add_user(engine, "reader")
        follow(engine, [user_id], local_id)
        web.post(f"{admin}/chapters", json=[{"manga": mid, "chapter": "4"}])

        with ServerHandle(server_settings(db_url), fast_options()) as server, \
                NotificationClient(*server.udp_addr, "reader", token) as reader:
            reader.register()
            served = sim.stats.total
            r = web.post(f"{server.http_url}/api/manga/{slug}/sync")
            assert r.status_code == 202, r.text
            asked = r.json()
            assert asked["status"] == "pending" and asked["mangadex_id"] == mid
            assert r.headers["location"] == asked["follow"]
            # The same manga again while the first is waiting: the same request, no second run.
            again = web.post(f"{server.http_url}/api/manga/{local_id}/sync").json()
            assert again["request_id"] == asked["request_id"] and not again["new_request"]
            assert sim.stats.total == served  # the server asked MangaDex nothing

            defs = build_definitions(settings_for(db_url, sim.url, server.http_url))
            instance = DagsterInstance.ephemeral()
            [request] = _tick(defs, instance)
            assert request.job_name == "sync_manga_job"
            assert request.run_config["ops"]["sync_one_manga"]["config"]["mangadex_id"] == mid
            assert _tick(defs, instance)[0].run_key == request.run_key  # deduplicated by Dagster

            result = _run(defs, instance, request)
            assert result.success
            pushed = reader.wait_for(1, 10)
            assert [(m["type"], m["chapter"]) for m in pushed] == [("NEW_CHAPTER", "4")]

            assert _tick(defs, instance) == []
            followed = web.get(f"{server.http_url}{asked['follow']}").json()
            assert followed["status"] == "succeeded" and followed["run_id"] == result.run_id
    with engine.connect() as conn:
        assert len(conn.execute(select(chapters.c.id)).all()) == 4


def test_manual_syncs_are_limited_per_caller_and_never_touch_mangadex(
        db_url: str, engine: Engine) -> None:
    ids = [add_manga(engine, f"Manga {n}") for n in range(5)]
    # MangaDex unreachable: before, three manual syncs opened the shared breaker.
    settings = server_settings(db_url, mangadex_api_url="http://127.0.0.1:9")
    with ServerHandle(settings, fast_options()) as server:
        answers = [web.post(f"{server.http_url}/api/manga/{i}/sync") for i in ids]
        assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
        assert int(answers[3].headers["retry-after"]) >= 1
        assert "a minute" in answers[3].json()["error"]
        assert web.get(f"{server.http_url}/health").json()["mangadex"]["breaker"] == "closed"
        assert web.get(f"{server.http_url}/api/sync-requests/999").status_code == 404
    with engine.connect() as conn:
        assert conn.execute(select(mangadex_circuit.c.state)).all() == []


def test_manual_syncs_from_one_ipv6_64_count_as_one_caller(engine: Engine) -> None:
    """An IPv6 caller that takes a new address of its /64 for each request gets no fresh
    allowance (each manual sync spends MangaDex requests); another /64 is another caller."""
    from mangasync_pipeline.notify import sync_requests

    ids = [add_manga(engine, f"Manga {n}") for n in range(5)]
    for n, manga_id in enumerate(ids[:3], start=1):
        sync_requests.record(engine, str(manga_id), f"2001:db8:0:7::{n:x}")
    with pytest.raises(sync_requests.TooManyRequests):
        sync_requests.record(engine, str(ids[3]), "2001:db8:0:7:ffff::1")
    assert sync_requests.record(engine, str(ids[4]), "2001:db8:0:8::1").created


def test_manual_sync_of_an_unknown_manga_is_404_and_records_nothing(
        db_url: str, engine: Engine) -> None:
    with ServerHandle(server_settings(db_url), fast_options()) as server:
        r = web.post(f"{server.http_url}/api/manga/no-such-manga/sync")
        assert r.status_code == 404 and "no-such-manga" in r.json()["error"]
        # A MangaDex id not catalogued yet is a valid request: the run imports it.
        uuid = "0b6f0a61-8d3c-4b5e-9f53-6f3f5ac3b1f0"
        r = web.post(f"{server.http_url}/api/manga/{uuid}/sync")
        assert r.status_code == 202 and r.json()["manga_id"] is None


def test_manual_sync_outside_the_content_ratings_is_refused_with_its_reason(
        db_url: str, engine: Engine) -> None:
    with Simulator(seed=2, manga_count=3, rate_limit=None, chapters_per_manga=0) as sim:
        admin = f"{sim.url}/_sim"
        # One catalogued while the operator still took erotica, one never catalogued.
        known = web.post(f"{admin}/manga", json={"contentRating": "erotica"}).json()["ids"][0]
        unknown = web.post(f"{admin}/manga",
                             json={"contentRating": "pornographic"}).json()["ids"][0]
        with client_for(settings_for(db_url, sim.url)) as client:
            import_ids(engine, client, [known], policy=SILENT)
        settings = settings_for(db_url, sim.url, content_ratings=("safe", "suggestive"))
        with ServerHandle(server_settings(db_url), fast_options()) as server:
            asked = {mid: web.post(f"{server.http_url}/api/manga/{mid}/sync").json()
                     for mid in (known, unknown)}
            defs = build_definitions(settings)
            instance = DagsterInstance.ephemeral()
            served = sim.stats.total
            # The catalogued one is refused by its stored rating, without a run or a request.
            [request] = _tick(defs, instance)
            assert request.run_config["ops"]["sync_one_manga"]["config"]["mangadex_id"] == \
                unknown
            assert sim.stats.total == served
            # The other one's run learns its rating from MangaDex and refuses it.
            result = _run(defs, instance, request)
            assert result.success
            assert _tick(defs, instance) == []
            shown = {mid: web.get(f"{server.http_url}{a['follow']}").json()
                     for mid, a in asked.items()}
    for mid, rating in ((known, "erotica"), (unknown, "pornographic")):
        assert shown[mid]["status"] == "refused"
        assert shown[mid]["error"] == (
            f"manga {mid} is rated {rating!r}, outside MANGASYNC_CONTENT_RATINGS "
            "(safe, suggestive): not synced")
    with engine.connect() as conn:
        assert set(conn.execute(select(manga.c.mangadex_id)).scalars()) == {known}
