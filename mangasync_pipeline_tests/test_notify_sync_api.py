"""`POST /api/manga/{id}/sync` on a live server: it re-reads the manga from MangaDex (the
simulator), applies the chapter rules, and the reader following it hears about what is new."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine, select

from mangasync_pipeline.db.tables import chapters, manga
from mangasync_pipeline.mangadex.simulator import Simulator
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.client import NotificationClient
from mangasync_pipeline.notify.testing import fast_options, follow, server_settings
from mangasync_pipeline.notify.users import add_user
from mangasync_pipeline.ops.system import free_port
from mangasync_pipeline.sync.catalogue import SILENT, import_ids
from mangasync_pipeline_tests.sync_helpers import client_for, settings_for


def test_manual_sync_stores_the_feed_and_notifies_the_new_chapter(
        db_url: str, engine: Engine) -> None:
    with Simulator(seed=2, manga_count=3, rate_limit=None, chapters_per_manga=0) as sim:
        admin = f"{sim.url}/_sim"
        mid = httpx.post(f"{admin}/manga", json={
            "title": {"en": "Manual Sync"}, "createdAt": "2025-01-01T00:00:00",
            "contentRating": "safe"}).json()["ids"][0]
        httpx.post(f"{admin}/chapters", json=[
            {"manga": mid, "chapter": str(n), "createdAt": f"2025-01-0{n + 1}T00:00:00"}
            for n in range(1, 4)])
        with client_for(settings_for(db_url, sim.url)) as client:
            import_ids(engine, client, [mid], policy=SILENT)
        with engine.connect() as conn:
            local_id, slug = conn.execute(select(manga.c.id, manga.c.slug).where(
                manga.c.mangadex_id == mid)).one()
        user_id, token = add_user(engine, "reader")
        follow(engine, [user_id], local_id)
        httpx.post(f"{admin}/chapters", json=[{"manga": mid, "chapter": "4"}])

        port = free_port()
        settings = server_settings(db_url, http_port=port, mangadex_api_url=sim.url,
                                   mangadex_rate_limit=1000.0,
                                   udp_server_url=f"http://127.0.0.1:{port}")
        with ServerHandle(settings, fast_options()) as server, \
                NotificationClient(*server.udp_addr, "reader", token) as reader:
            reader.register()
            r = httpx.post(f"{server.http_url}/api/manga/{slug}/sync", timeout=60)
            assert r.status_code == 200, r.text
            found = r.json()
            assert found["manga_id"] == local_id and found["chapters_stored"] == 4
            assert found["new_chapters"] == ["4"] and found["notifications_delivered"] == 1
            pushed = reader.wait_for(1, 10)
            assert [(m["type"], m["chapter"]) for m in pushed] == [("NEW_CHAPTER", "4")]

            again = httpx.post(f"{server.http_url}/api/manga/{mid}/sync", timeout=60).json()
            assert again["chapters_stored"] == 0 and again["new_chapters"] == []
    with engine.connect() as conn:
        assert len(conn.execute(select(chapters.c.id)).all()) == 4
