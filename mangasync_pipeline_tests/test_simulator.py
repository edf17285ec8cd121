"""The MangaDex simulator, over real HTTP: shapes as captured, MangaDex's rules, admin, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mangasync_pipeline.mangadex.models import parse_chapter, parse_collection, parse_manga
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline_tests import web

# The real captures (shared/mangadex/fixtures, copied byte for byte beside the tests).
FIXTURES = Path(__file__).parent / "fixtures" / "mangadex"
END = "2026-05-01T00:00:00"  # a fixed catalogue end makes data independent of today's date


def fixture(name: str) -> Any:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"MangaDex capture {name} missing: expected it in {FIXTURES}")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def client(simulator: Simulator) -> Iterator[httpx.Client]:
    with web.Client(base_url=simulator.url, timeout=10) as c:
        yield c


def get_ok(c: httpx.Client, path: str, **params: Any) -> Any:
    r = c.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def attrs_keys(items: list[dict[str, Any]]) -> set[str]:
    return set().union(*(i["attributes"].keys() for i in items))


def rel_attr_keys(items: list[dict[str, Any]], kind: str) -> set[str]:
    return set().union(*(r["attributes"].keys() for i in items for r in i["relationships"]
                         if r["type"] == kind and "attributes" in r))


# -- shapes ---------------------------------------------------------------------------------

def test_manga_list_has_the_captured_shape(client: httpx.Client) -> None:
    real = fixture("manga-list-includes-cover_art-author.json")
    ours = get_ok(client, "/manga", **{"limit": 20, "includes[]": ["cover_art", "author"]})
    assert ours.keys() == real.keys()
    assert ours["data"][0].keys() == real["data"][0].keys()
    assert attrs_keys(ours["data"]) == attrs_keys(real["data"])
    assert rel_attr_keys(ours["data"], "cover_art") == rel_attr_keys(real["data"], "cover_art")
    assert rel_attr_keys(ours["data"], "author") == rel_attr_keys(real["data"], "author")
    # Only listed types are expanded: artist stays a bare reference.
    artists = [r for m in ours["data"] for r in m["relationships"] if r["type"] == "artist"]
    assert artists and all(set(r) == {"id", "type"} for r in artists)
    tag = ours["data"][0]["attributes"]["tags"][0]
    assert tag.keys() == real["data"][0]["attributes"]["tags"][0].keys()
    assert tag["attributes"].keys() == real["data"][0]["attributes"]["tags"][0]["attributes"].keys()


def test_manga_entity_and_not_found_match_captures(client: httpx.Client) -> None:
    real = fixture("manga-get-single.json")
    first = get_ok(client, "/manga", limit=1)["data"][0]
    ours = get_ok(client, f"/manga/{first['id']}")
    assert ours.keys() == real.keys() and ours["response"] == "entity"
    assert ours["data"]["attributes"].keys() == real["data"]["attributes"].keys()
    assert ours["data"] == first

    missing = "00000000-0000-0000-0000-000000000000"
    r = client.get(f"/manga/{missing}")
    assert r.status_code == 404
    assert r.json() == fixture("error-404-manga-not-found.json")


def test_chapters_and_feed_have_the_captured_shape(client: httpx.Client) -> None:
    real = fixture("chapter-list.json")
    ours = get_ok(client, "/chapter", limit=5)
    assert ours.keys() == real.keys()
    assert len(ours["data"]) == 5 and ours["total"] > 1000
    assert ours["data"][0].keys() == real["data"][0].keys()
    assert attrs_keys(ours["data"]) == attrs_keys(real["data"])
    assert [r["type"] for r in ours["data"][0]["relationships"]] == [
        r["type"] for r in real["data"][0]["relationships"]]

    expanded = get_ok(client, "/chapter", **{
        "limit": 3, "includes[]": ["scanlation_group", "manga", "user"]})["data"][0]
    assert {r["type"] for r in expanded["relationships"] if "attributes" in r} == {
        "scanlation_group", "manga", "user"}
    manga_rel = next(r for r in expanded["relationships"] if r["type"] == "manga")
    assert manga_rel["attributes"].keys() == fixture("manga-get-single.json")["data"][
        "attributes"].keys()

    manga_id = ours["data"][0]["relationships"][1]["id"]
    feed = get_ok(client, f"/manga/{manga_id}/feed")
    assert attrs_keys(feed["data"]) == attrs_keys(real["data"]) and feed["limit"] == 100
    empty = get_ok(client, "/manga/00000000-0000-0000-0000-000000000000/feed", limit=2)
    assert empty == fixture("manga-feed-nonexistent-manga-empty-200.json")


def test_tag_list_is_mangadex_s(client: httpx.Client) -> None:
    real = fixture("manga-tag-list.json")
    assert get_ok(client, "/manga/tag") == real


def test_headers_and_ping(client: httpx.Client) -> None:
    r = client.get("/ping")
    assert (r.status_code, r.text, r.headers["content-type"]) == (200, "pong", "text/plain")
    r = client.get("/manga", params={"limit": 1})
    assert r.headers["server"] == "MangaDex"
    assert r.headers["content-type"] == "application/json"
    assert len(r.headers["x-request-id"]) == 36
    assert int(r.headers["content-length"]) == len(r.content)


def test_catalogue_has_the_real_world_variety(simulator: Simulator) -> None:
    admin = SimulatorAdmin(simulator.url)
    manga = list(simulator.catalogue.manga.values())
    titles = [m.title for m in manga]
    assert any("en" not in t for t in titles)
    assert any("en" not in m.title and any("en" in a for a in m.alt_titles) for m in manga)
    assert any(isinstance(m.description, list) for m in manga) or len(manga) < 100
    assert {m.status for m in manga} == {"ongoing", "completed", "hiatus", "cancelled"}
    assert {"", None} <= {m.last_chapter for m in manga}
    assert any(m.content_rating == "pornographic" for m in manga)
    chapters = list(simulator.catalogue.chapters.values())
    labels = {c.chapter for c in chapters}
    assert None in labels and any(lb and "." in lb for lb in labels)
    assert {c.language for c in chapters} >= {"en", "es"}
    external = [c for c in chapters if c.external_url]
    assert external and all(c.pages == 0 for c in external)
    # As in real captures: link chapters readable at once, published within seconds of their
    # creation; parked at a far-future publishAt only rarely.
    at_once = [c for c in external if c.publish_at - c.created_at <= 3]
    parked = [c for c in external if c.publish_at > c.created_at + 86400 * 365]
    assert all(c.readable_at == c.publish_at for c in at_once)
    assert all(c.readable_at == c.created_at for c in parked)
    assert len(at_once) + len(parked) == len(external) and len(parked) < len(at_once)
    assert any(len(c.groups) in (2, 3) for c in chapters)
    assert any(m.links is None for m in manga) and any(m.null_language for m in manga)
    record = admin.get_manga(external[0].manga.id)
    assert any(ch["attributes"]["externalUrl"] for ch in record["chapters"])
    admin.close()


def test_real_null_shapes_are_served(client: httpx.Client, simulator: Simulator) -> None:
    """`links: null`, a null among availableTranslatedLanguages and a tag description `[]`,
    each seen in real manga bodies, and our parser takes them."""
    odd = [m.id for m in simulator.catalogue.manga.values()
           if m.links is None or m.null_language][:100]
    body = get_ok(client, "/manga", **{"ids[]": odd, "limit": 100,
                                       "contentRating[]": ["safe", "suggestive", "erotica",
                                                           "pornographic"]})
    attrs = [m["attributes"] for m in body["data"]]
    assert any(a["links"] is None for a in attrs)
    assert any(None in a["availableTranslatedLanguages"] for a in attrs)
    everything = get_ok(client, "/manga", limit=100)["data"]
    assert any(t["attributes"]["description"] == [] for m in everything
               for t in m["attributes"]["tags"])
    parsed = parse_collection(body, "/manga", parse_manga)
    assert parsed.skipped == 0 and len(parsed.items) == len(body["data"])
    assert all(None not in m.available_languages for m in parsed.items)


def test_a_chapter_with_several_groups(client: httpx.Client,
                                       simulator_admin: SimulatorAdmin) -> None:
    mid = simulator_admin.add_manga(title="Joint", contentRating="safe")["ids"][0]
    cid = simulator_admin.add_chapters([{"manga": mid, "chapter": "1",
                                         "groups": ["One Scans", "Two Scans", "Three"]}])[0]
    body = get_ok(client, "/chapter", **{"ids[]": cid, "includes[]": "scanlation_group"})
    groups = [r for r in body["data"][0]["relationships"] if r["type"] == "scanlation_group"]
    assert [g["attributes"]["name"] for g in groups] == ["One Scans", "Two Scans", "Three"]
    chapter = parse_collection(body, "/chapter", parse_chapter).items[0]
    assert chapter.group_ids == tuple(g["id"] for g in groups)


def test_a_request_without_user_agent_gets_mangadex_s_plain_400(simulator: Simulator) -> None:
    r = web.get(f"{simulator.url}/manga", headers={"User-Agent": ""})
    assert r.status_code == 400
    assert r.headers["content-type"] == "text/plain"
    assert r.text == "You must set an appropriate User-Agent header"


# -- determinism ----------------------------------------------------------------------------

def test_same_seed_same_data_other_seed_other_data(
    make_simulator: Callable[..., Simulator],
) -> None:
    a, b, c = (make_simulator(seed=s, manga_count=120, end=END) for s in (7, 7, 8))

    def snapshot(sim: Simulator) -> list[Any]:
        with web.Client(base_url=sim.url) as h:
            page = get_ok(h, "/manga", **{"limit": 100, "order[createdAt]": "asc",
                                          "includes[]": ["cover_art", "author"]})
            feed = get_ok(h, f"/manga/{page['data'][-1]['id']}/feed",
                          **{"order[chapter]": "asc", "limit": 500})
            return [page, feed]

    assert snapshot(a) == snapshot(b)
    assert snapshot(a)[0]["data"][0]["id"] != snapshot(c)[0]["data"][0]["id"]


# -- /manga rules -----------------------------------------------------------------------------

def test_manga_paging_by_created_at_is_stable_and_inclusive(client: httpx.Client) -> None:
    everything = []
    offset = 0
    while True:
        page = get_ok(client, "/manga", **{"limit": 100, "offset": offset,
                                           "order[createdAt]": "asc",
                                           "contentRating[]": ["safe", "suggestive",
                                                               "erotica", "pornographic"]})
        everything += page["data"]
        offset += 100
        if offset >= page["total"]:
            break
    assert len(everything) == 300 == len({m["id"] for m in everything})
    created = [m["attributes"]["createdAt"] for m in everything]
    assert created == sorted(created)

    pivot = created[150][:19]
    since = get_ok(client, "/manga", **{"limit": 100, "createdAtSince": pivot,
                                        "order[createdAt]": "desc",
                                        "contentRating[]": ["safe", "suggestive", "erotica",
                                                            "pornographic"]})
    assert since["total"] == sum(c[:19] >= pivot for c in created)
    assert since["data"][-1]["attributes"]["createdAt"][:19] >= pivot  # inclusive
    default = get_ok(client, "/manga", limit=0)
    porn = sum(m["attributes"]["contentRating"] == "pornographic" for m in everything)
    assert porn > 0 and default["total"] == 300 - porn


@pytest.mark.parametrize(("params", "detail"), [
    ({"createdAtSince": "2024-01-01T00:00:00Z"}, "/createdAtSince"),
    ({"updatedAtSince": "2024-01-01 00:00:00"}, "/updatedAtSince"),
    ({"limit": "101"}, "/limit"),
    ({"limit": "abc"}, "/limit"),
    ({"order[createdAt]": "up"}, "/order/createdAt"),
    ({"ids[]": "not-a-uuid"}, "/ids/0"),
    ({"ids": "9d3d3403-1a87-4737-9803-bc3d99db1424"}, "/ids"),
])
def test_manga_list_validation_is_a_400_naming_the_parameter(
    client: httpx.Client, params: dict[str, str], detail: str,
) -> None:
    r = client.get("/manga", params=params)
    assert r.status_code == 400
    error = r.json()["errors"][0]
    assert r.json()["result"] == "error" and error["status"] == 400
    assert detail in error["detail"]


def test_result_window_of_ten_thousand(client: httpx.Client) -> None:
    assert client.get("/manga", params={"limit": 100, "offset": 9900}).status_code == 200
    r = client.get("/manga", params={"limit": 100, "offset": 9901})
    assert r.status_code == 400
    err = r.json()["errors"][0]
    assert err["title"] == "bad_request_http_exception"
    assert err["detail"] == (
        "Result window is too large, from + size must be less than or equal to: [10000] but "
        "was [10001]. See the scroll api for a more efficient way to request large data sets. "
        "This limit can be set by changing the [index.max_result_window] index level setting.")
    assert client.get("/chapter", params={"limit": 100, "offset": 9950}).status_code == 400
    feed = "/manga/00000000-0000-0000-0000-000000000000/feed"
    assert client.get(feed, params={"limit": 500, "offset": 9600}).status_code == 400


# -- chapters: include* tri-state and the clock -----------------------------------------------

@pytest.fixture
def flagged(simulator: Simulator, simulator_admin: SimulatorAdmin) -> dict[str, str]:
    """A fresh manga with one chapter of each kind the include* flags tell apart."""
    mid = simulator_admin.add_manga(title="Flag Test", contentRating="safe")["ids"][0]
    now = time.time()
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + 3 * 86400))
    kinds = {
        "normal": {"chapter": "1"},
        "empty": {"chapter": "2", "pages": 0},
        "future": {"chapter": "3", "publishAt": future},
        "external": {"chapter": "4", "externalUrl": "https://example.com/c/4",
                     "publishAt": "2037-12-31T00:00:00"},
    }
    ids = simulator_admin.add_chapters(
        [{"manga": mid, "group": "Flag Scans", **spec} for spec in kinds.values()])
    return {"manga": mid, **dict(zip(kinds, ids, strict=True))}


@pytest.mark.parametrize(("flags", "expected"), [
    ({}, {"normal", "empty"}),
    ({"includeFuturePublishAt": "1"}, {"future", "external"}),
    ({"includeFuturePublishAt": "0"}, {"normal", "empty"}),
    ({"includeExternalUrl": "0"}, {"normal", "empty", "future"}),
    ({"includeExternalUrl": "1"}, {"external"}),
    ({"includeEmptyPages": "1"}, {"empty", "external"}),
    ({"includeEmptyPages": "0"}, {"normal", "future"}),
    ({"includeEmptyPages": "0", "includeFuturePublishAt": "0"}, {"normal"}),
])
def test_include_flags_are_tri_state(
    client: httpx.Client, flagged: dict[str, str], flags: dict[str, str], expected: set[str],
) -> None:
    names = {v: k for k, v in flagged.items()}
    feed = get_ok(client, f"/manga/{flagged['manga']}/feed", **flags)
    assert {names[c["id"]] for c in feed["data"]} == expected
    listed = get_ok(client, "/chapter", manga=flagged["manga"], limit=100, **flags)
    assert {names[c["id"]] for c in listed["data"]} == expected


def test_external_chapter_is_readable_at_creation(
    client: httpx.Client, flagged: dict[str, str],
) -> None:
    ch = get_ok(client, "/chapter", **{"ids[]": flagged["external"], "includeExternalUrl": "1"})
    a = ch["data"][0]["attributes"]
    assert a["pages"] == 0 and a["publishAt"].startswith("2037")
    assert a["readableAt"] == a["createdAt"]


def test_moving_the_clock_publishes_scheduled_chapters(
    client: httpx.Client, simulator_admin: SimulatorAdmin, flagged: dict[str, str],
) -> None:
    feed = f"/manga/{flagged['manga']}/feed"
    assert flagged["future"] not in {c["id"] for c in get_ok(client, feed)["data"]}
    clock = simulator_admin.set_clock_offset(4 * 86400)
    assert clock["offset_seconds"] == 4 * 86400
    assert flagged["future"] in {c["id"] for c in get_ok(client, feed)["data"]}


def test_chapter_ordering_is_numeric(client: httpx.Client, simulator_admin: SimulatorAdmin) -> None:
    mid = simulator_admin.add_manga(title="Order Test")["ids"][0]
    labels = ["10", "2", "EXTRA", "1.5", None, "2"]
    simulator_admin.add_chapters([{"manga": mid, "chapter": lb, "group": f"G{i}"}
                                  for i, lb in enumerate(labels)])
    asc = get_ok(client, f"/manga/{mid}/feed", **{"order[chapter]": "asc"})
    assert [c["attributes"]["chapter"] for c in asc["data"]] == [
        "1.5", "2", "2", "10", "EXTRA", None]
    desc = get_ok(client, f"/manga/{mid}/feed", **{"order[chapter]": "desc"})
    assert [c["attributes"]["chapter"] for c in desc["data"]] == [
        None, "EXTRA", "10", "2", "2", "1.5"]
    oneshot = next(c for c in asc["data"] if c["attributes"]["chapter"] is None)
    assert oneshot["attributes"]["title"] == "Oneshot"


def test_chapter_since_filters_and_order(client: httpx.Client) -> None:
    page = get_ok(client, "/chapter", **{"limit": 100, "order[updatedAt]": "asc",
                                         "updatedAtSince": "2025-01-01T00:00:00",
                                         "translatedLanguage[]": "en"})
    stamps = [c["attributes"]["updatedAt"] for c in page["data"]]
    assert stamps == sorted(stamps) and stamps[0] >= "2025-01-01"
    assert {c["attributes"]["translatedLanguage"] for c in page["data"]} == {"en"}


# -- rate limit ---------------------------------------------------------------------------------

def test_over_the_rate_limit_answers_429_with_mangadex_headers(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(manga_count=20, rate_limit=5)
    with web.Client(base_url=sim.url) as c, SimulatorAdmin(sim.url) as admin:
        answers = [c.get("/ping") for _ in range(8)]
        for _ in range(3):
            admin.stats()  # admin calls are neither limited nor counted
        codes = [r.status_code for r in answers]
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        limited = next(r for r in answers if r.status_code == 429)
        assert limited.headers["X-RateLimit-Limit"] == "5"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        retry_at = int(limited.headers["X-RateLimit-Retry-After"])
        assert time.time() - 1 <= retry_at <= time.time() + 3
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["errors"][0]["status"] == 429
        stats = admin.stats()
        assert stats["total"] == 8 and stats["requests"]["/ping"] == 8
        assert stats["max_per_second"] > 5  # the burst, as the simulator counted it
        assert stats["rate_limited"] == codes.count(429) == stats["by_status"]["429"]

        time.sleep(max(0.0, retry_at - time.time()) + 1.05)  # honour it, as a client would
        assert c.get("/ping").status_code == 200
        admin.reset_stats()
        assert admin.stats()["total"] == 0


# -- faults ----------------------------------------------------------------------------------

def test_faults(client: httpx.Client, simulator_admin: SimulatorAdmin) -> None:
    simulator_admin.set_faults(burst_429=2, retry_after=3)
    for _ in range(2):
        r = client.get("/manga")
        assert r.status_code == 429 and r.headers["Retry-After"] == "3"
        assert int(r.headers["X-RateLimit-Retry-After"]) >= int(time.time()) + 1
    assert client.get("/manga").status_code == 200

    simulator_admin.set_faults(malformed=1)
    assert client.get("/manga").json() == {"result": "ok", "data": "oops"}
    simulator_admin.set_faults(truncated=1)
    r = client.get("/manga", params={"limit": 5})
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    assert client.get("/manga").json()["result"] == "ok"

    simulator_admin.set_faults(drop=1)
    with pytest.raises(httpx.TransportError):
        client.get("/manga")
    assert client.get("/manga").status_code == 200

    simulator_admin.set_faults(bad_items=1)
    broken = get_ok(client, "/manga", limit=10)["data"]
    assert sum("attributes" not in m for m in broken) == 1
    assert all("attributes" in m for m in get_ok(client, "/manga", limit=10)["data"])
    simulator_admin.set_faults(bad_items=1, bad_item_kind="bad_date")
    dates = [c["attributes"]["publishAt"] for c in get_ok(client, "/chapter", limit=5)["data"]]
    assert dates.count("not-a-date") == 1

    simulator_admin.set_faults(error_rate=1.0, error_status=503)
    r = client.get("/chapter")
    assert r.status_code == 503 and r.json()["result"] == "error"
    simulator_admin.clear_faults()
    assert client.get("/chapter").status_code == 200
    by_status = simulator_admin.stats()["by_status"]
    assert by_status["503"] == 1 and by_status["dropped"] == 1


def test_shuffled_ties_change_only_the_order_within_a_second(
        client: httpx.Client, simulator_admin: SimulatorAdmin) -> None:
    mid = simulator_admin.add_manga(title={"en": "Tied"}, contentRating="safe")["ids"][0]
    at = "2020-02-02T02:02:02+00:00"
    simulator_admin.add_chapters([{"manga": mid, "chapter": str(n), "group": "Tie Scans",
                                   "createdAt": at, "publishAt": at} for n in range(40)])
    params = {"manga": mid, "limit": 100, "order[createdAt]": "asc"}
    steady = [c["id"] for c in get_ok(client, "/chapter", **params)["data"]]
    assert steady == sorted(steady)  # ties in id order, the same on every request
    simulator_admin.set_faults(shuffle_ties=2)
    orders = [[c["id"] for c in get_ok(client, "/chapter", **params)["data"]] for _ in range(2)]
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1]) == steady
    assert [c["id"] for c in get_ok(client, "/chapter", **params)["data"]] == steady


def test_error_rate_is_seeded_and_roughly_honoured(
    make_simulator: Callable[..., Simulator],
) -> None:
    outcomes = []
    for _ in range(2):
        sim = make_simulator(manga_count=5)
        with web.Client(base_url=sim.url) as c, SimulatorAdmin(sim.url) as admin:
            admin.set_faults(error_rate=0.3)
            outcomes.append([c.get("/ping").status_code for _ in range(200)])
    assert outcomes[0] == outcomes[1]
    assert 30 <= outcomes[0].count(500) <= 90


# -- admin ---------------------------------------------------------------------------------

def test_admin_add_patch_and_record(
    client: httpx.Client, simulator_admin: SimulatorAdmin,
) -> None:
    added = simulator_admin.add_manga(
        title="Sim Added", status="ongoing", lastChapter="", tags=["Action", "Romance"])
    mid = added["ids"][0]
    assert added["manga"]["attributes"]["title"] == {"en": "Sim Added"}
    newest = get_ok(client, "/manga", **{"limit": 1, "order[createdAt]": "desc"})["data"][0]
    assert newest["id"] == mid
    assert {t["attributes"]["name"]["en"] for t in newest["attributes"]["tags"]} == {
        "Action", "Romance"}

    simulator_admin.set_clock_offset(3600)
    patched = simulator_admin.update_manga(mid, title="Renamed", status="completed",
                                           lastChapter="12")
    attrs = patched["manga"]["attributes"]
    assert (attrs["title"], attrs["status"], attrs["lastChapter"], attrs["version"]) == (
        {"en": "Renamed"}, "completed", "12", 2)
    assert attrs["updatedAt"] > newest["attributes"]["updatedAt"]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3000))
    updated = get_ok(client, "/manga", updatedAtSince=since)
    assert [m["id"] for m in updated["data"]] == [mid]

    ch = simulator_admin.add_chapters([{"manga": mid, "chapter": "1", "group": "Sim Scans"}])
    record = simulator_admin.get_manga(mid)
    assert [c["id"] for c in record["chapters"]] == ch
    group = next(r for r in record["chapters"][0]["relationships"]
                 if r["type"] == "scanlation_group")
    assert group["attributes"]["name"] == "Sim Scans"
    entity = get_ok(client, f"/manga/{mid}")["data"]["attributes"]
    assert entity["latestUploadedChapter"] == ch[0]
    assert entity["availableTranslatedLanguages"] == ["en"]

    simulator_admin.remove_manga(mid)
    assert client.get(f"/manga/{mid}").status_code == 404
    assert get_ok(client, f"/manga/{mid}/feed")["total"] == 0


def test_admin_rejects_bad_input_with_a_reason(simulator_admin: SimulatorAdmin) -> None:
    from mangasync_pipeline.mangadex.simulator import SimulatorError

    with pytest.raises(SimulatorError, match="unknown tag"):
        simulator_admin.add_manga(title="x", tags=["No Such Tag"])
    with pytest.raises(SimulatorError, match="not a known manga"):
        simulator_admin.add_chapters([{"manga": "00000000-0000-0000-0000-000000000000"}])
    with pytest.raises(SimulatorError, match="unknown fault"):
        simulator_admin.set_faults(explode=1)


def test_a_day_with_more_than_ten_thousand_manga(
    client: httpx.Client, simulator_admin: SimulatorAdmin,
) -> None:
    ids = simulator_admin.add_manga(count=12000, day="2030-01-02", contentRating="safe")["ids"]
    assert len(ids) == 12000
    params = {"createdAtSince": "2030-01-02T00:00:00", "order[createdAt]": "asc",
              "contentRating[]": ["safe", "suggestive", "erotica", "pornographic"]}
    first = get_ok(client, "/manga", limit=100, **params)
    assert first["total"] == 12000  # uncapped
    assert client.get("/manga", params={**params, "limit": 100, "offset": 9950}).status_code \
        == 400
    last = get_ok(client, "/manga", limit=100, offset=9900, **params)["data"][-1]
    rest = get_ok(client, "/manga", limit=100, **{
        **params, "createdAtSince": last["attributes"]["createdAt"][:19]})
    assert rest["total"] <= 12000 - 9999 + 5  # a createdAt window reaches the rest


# -- live mode and CLI ---------------------------------------------------------------------

def test_live_mode_keeps_publishing(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(manga_count=10, publish_every=0.05)
    before = sim.catalogue.counts()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = sim.catalogue.counts()
        if now["manga"] >= before["manga"] + 3 and now["chapters"] > before["chapters"]:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"live mode published nothing: {before} -> {sim.catalogue.counts()}")
    with web.Client(base_url=sim.url) as c:
        newest = get_ok(c, "/manga", **{"limit": 1, "order[createdAt]": "desc"})["data"][0]
        feed = get_ok(c, f"/manga/{newest['id']}/feed")
        assert feed["total"] >= 1


@pytest.mark.process
def test_cli_serves_until_interrupted() -> None:
    code = ("from mangasync_pipeline.mangadex.simulator.cli import fake_mangadex; "
            "fake_mangadex(['--port', '0', '--manga', '30', '--rate-limit', '0'])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert web.get(f"{url}/ping").text == "pong"
        assert get_ok(web.Client(base_url=url), "/manga", limit=0)["total"] > 0
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err
