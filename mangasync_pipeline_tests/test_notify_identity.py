"""Which triggers are "the same notification": nothing a reader would see differently is
suppressed, and what is suppressed is said per reader in the answer."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select

from mangasync_pipeline.db import tables as t
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.testing import add_manga, add_users, follow
from mangasync_pipeline_tests import web


def _messages(engine: Engine) -> list[tuple[Any, ...]]:
    n = t.notifications
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(n.c.user_id, n.c.chapter, n.c.label, n.c.message).order_by(n.c.id))]


# Each pair: two triggers a reader tells apart, sent within the hour (the reported cases).
DISTINCT = {
    "label 12a after 12": (
        ("new-chapter", {"title": "T", "chapter": "12", "label": "12"}),
        ("new-chapter", {"title": "T", "chapter": "12", "label": "12a"})),
    "pt-br after en": (
        ("new-chapter", {"title": "T", "chapter": 12, "language": "en"}),
        ("new-chapter", {"title": "T", "chapter": 12, "language": "pt-br"})),
    "title change after status change": (
        ("manga-update", {"title": "T", "message": "Status: completed"}),
        ("manga-update", {"title": "T", "message": "Title changed to T2"})),
    "a second unnumbered chapter": (
        ("new-chapter", {"title": "T", "chapter": None, "chapter_title": "Extra"}),
        ("new-chapter", {"title": "T", "chapter": None, "chapter_title": "Extra"})),
    "same chapter, another dedup_key": (
        ("new-chapter", {"title": "T", "chapter": 5, "dedup_key": "a"}),
        ("new-chapter", {"title": "T", "chapter": 5, "dedup_key": "b"})),
}


@pytest.mark.parametrize("case", sorted(DISTINCT))
def test_distinct_notifications_within_the_hour_all_reach_the_reader(
        server: ServerHandle, engine: Engine, case: str) -> None:
    manga_id = add_manga(engine)
    readers = add_users(engine, 2)
    follow(engine, [u for u, _, _ in readers], manga_id)
    for kind, body in DISTINCT[case]:
        r = web.post(f"{server.http_url}/notify/{kind}", json={"manga_id": manga_id, **body})
        assert r.status_code == 202, r.text
        assert r.json()["recipients"] == 2, r.json()
        assert "suppressed" not in r.json()
    assert len(_messages(engine)) == 4


def test_the_same_notification_again_is_suppressed_and_said_per_reader(
        server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    (ann, _, _), (ben, _, _), (cat, _, _) = add_users(engine, 3)
    follow(engine, [ann, ben], manga_id)
    url = f"{server.http_url}/notify/new-chapter"
    body = {"manga_id": manga_id, "title": "T", "chapter": 12, "label": "12a",
            "language": "en"}
    first = web.post(url, json=body).json()
    follow(engine, [cat], manga_id)  # cat follows since: only cat has not seen it
    again = web.post(url, json={**body, "chapter": "12.0"}).json()
    assert again["recipients"] == 1
    ids = dict(zip(sorted([ann, ben]), first["notification_ids"], strict=True))
    assert again["suppressed"] == [{"user_id": ann, "same_as": ids[ann]},
                                   {"user_id": ben, "same_as": ids[ben]}]
    assert again["suppressed_count"] == 2
    assert [m[0] for m in _messages(engine)] == [ann, ben, cat]


def test_a_dedup_key_deduplicates_by_the_key_alone(server: ServerHandle,
                                                   engine: Engine) -> None:
    manga_id = add_manga(engine)
    follow(engine, [u for u, _, _ in add_users(engine, 1)], manga_id)
    url = f"{server.http_url}/notify/manga-update"
    first = web.post(url, json={"manga_id": manga_id, "title": "T", "message": "Status: x",
                                  "dedup_key": "k1"})
    # The same key with another body: answers like the first, creates nothing.
    again = web.post(url, json={"manga_id": manga_id, "title": "T", "message": "other",
                                  "dedup_key": "k1"})
    assert again.json() == first.json()
    assert len(_messages(engine)) == 1


def test_a_batch_says_what_it_suppressed_per_trigger(server: ServerHandle,
                                                     engine: Engine) -> None:
    manga_id = add_manga(engine)
    [(ann, _, _)] = add_users(engine, 1)
    follow(engine, [ann], manga_id)
    item = {"kind": "manga-update", "manga_id": manga_id, "title": "T", "message": "m"}
    r = web.post(f"{server.http_url}/notify/batch", json={"triggers": [
        item, item, {**item, "message": "n"}]})
    results = r.json()["results"]
    assert [x["recipients"] for x in results] == [1, 0, 1]
    assert results[1]["suppressed"] == [{"user_id": ann,
                                         "same_as": results[0]["notification_ids"][0]}]
