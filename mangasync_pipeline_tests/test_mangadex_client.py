"""The MangaDex client over real HTTP against the simulator."""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mangasync_pipeline.config import ClientPolicy
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import upgrade
from mangasync_pipeline.db.tables import mangadex_circuit
from mangasync_pipeline.mangadex.client import ALL_CONTENT_RATINGS, MangaDexClient
from mangasync_pipeline.mangadex.errors import (
    CircuitOpenError,
    MalformedResponseError,
    MangaDexHTTPError,
    MangaDexUnavailableError,
    MangaNotFoundError,
)
from mangasync_pipeline.mangadex.models import Page
from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin
from mangasync_pipeline.mangadex.simulator.outage import OutageProxy
from mangasync_pipeline_tests.test_mangadex_breaker import FakeClock

pytestmark = pytest.mark.process

FAST_POLICY = ClientPolicy(backoff_base=0.01, backoff_max=0.05, max_retries=5)
FAST: dict[str, Any] = {"rate_limit": None, "policy": FAST_POLICY}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(seed=7, manga_count=60, rate_limit=None, chapters_per_manga=12) as s:
        yield s


@pytest.fixture
def admin(sim: Simulator) -> Iterator[SimulatorAdmin]:
    with SimulatorAdmin(sim.url) as a:
        a.clear_faults()
        a.reset_stats()
        yield a
        a.clear_faults()


@pytest.fixture
def client(sim: Simulator) -> Iterator[MangaDexClient]:
    with MangaDexClient(sim.url, **FAST) as c:
        yield c


def some_manga_id(client: MangaDexClient) -> str:
    return client.newest_manga(1)[0].id


def test_ping_tags_and_one_manga(client: MangaDexClient, admin: SimulatorAdmin) -> None:
    assert client.ping() is True
    tags = client.list_tags()
    assert any(t.group == "genre" for t in tags)
    manga_id = some_manga_id(client)
    manga = client.get_manga(manga_id)
    assert manga.id == manga_id
    assert manga.authors_expanded
    assert client.cover_url(manga) is not None
    snap = client.stats.snapshot()
    assert snap.by_endpoint() == {"/ping": 1, "/manga/tag": 1, "/manga": 1, "/manga/{id}": 1}
    assert admin.stats()["total"] == 4


def test_unknown_manga_is_not_found_with_mangadex_detail(client: MangaDexClient) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(MangaNotFoundError) as err:
        client.get_manga(missing)
    message = str(err.value)
    assert f"/manga/{missing}" in message and "HTTP 404" in message and "not found" in message
    assert "\n" not in message
    assert err.value.status == 404
    assert client.stats.snapshot().retries == 0


def test_bad_request_is_not_retried_and_names_endpoint_and_detail(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    manga_id = some_manga_id(client)
    admin.reset_stats()
    with pytest.raises(MangaDexHTTPError) as err:
        client.feed_page(manga_id, ["en"], {"nonsense": "asc"}, limit=10)
    assert f"/manga/{manga_id}/feed" in str(err.value) and "HTTP 400" in str(err.value)
    assert err.value.detail and "order" in err.value.detail
    assert admin.stats()["total"] == 1


def test_newest_200_manga_take_exactly_two_requests(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    newest = client.newest_manga(55)
    assert len(newest) == 55
    assert [m.created_at for m in newest] == sorted((m.created_at for m in newest), reverse=True)
    admin.add_manga(count=150, day="2024-05-01")
    admin.reset_stats()
    assert len({m.id for m in client.newest_manga(200)}) == 200
    assert admin.stats()["requests"]["/manga"] == 2


def test_manga_by_ids_in_chunks_of_100(client: MangaDexClient, admin: SimulatorAdmin) -> None:
    ids = admin.add_manga(count=130, day="2024-06-01")["ids"]
    admin.reset_stats()
    found = client.get_manga_by_ids([*ids, "00000000-0000-0000-0000-000000000000"])
    assert {m.id for m in found} == set(ids)
    assert admin.stats()["requests"]["/manga"] == 2


def test_429_with_retry_after_delays_the_retry(
    client: MangaDexClient, admin: SimulatorAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    admin.set_faults(burst_429=1, retry_after=3)
    started = time.monotonic()
    with caplog.at_level("DEBUG", logger="mangasync.mangadex"):
        assert client.list_tags()
    assert time.monotonic() - started >= 3.0
    snap = client.stats.snapshot()
    assert snap.requests[("/manga/tag", "429")] == 1
    assert snap.retries == 1 and snap.retry_wait_s >= 3.0
    # The log names the endpoint, the status and a delay of at least Retry-After (the
    # whole-second X-RateLimit-Retry-After timestamp can make it up to a second longer).
    logged = re.search(r"retrying GET /manga/tag in (\d+\.\d+)s", caplog.text)
    assert logged and float(logged.group(1)) >= 3.0 and "HTTP 429" in caplog.text


def test_ping_is_one_attempt_and_false_when_limited(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    admin.set_faults(burst_429=1, retry_after=3)
    started = time.monotonic()
    assert client.ping() is False
    assert time.monotonic() - started < 2.5  # did not wait out the 3 s Retry-After
    assert admin.stats()["total"] == 1
    # Why it failed is kept, for whoever has only the False (no log line per failed ping).
    assert client.ping_error is not None and "429" in client.ping_error
    assert client.ping() is True and client.ping_error is None


def test_500_burst_is_survived(client: MangaDexClient, admin: SimulatorAdmin) -> None:
    admin.set_faults(error_rate=1.0, error_status=500)

    def heal() -> None:
        with SimulatorAdmin(admin.url) as other:
            deadline = time.monotonic() + 10
            while other.stats()["by_status"].get("500", 0) < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            other.clear_faults()

    healer = threading.Thread(target=heal)
    healer.start()
    policy = ClientPolicy(backoff_base=0.2, backoff_max=1.0, max_retries=5)
    with MangaDexClient(admin.url, rate_limit=None, policy=policy) as c:
        assert c.list_tags()
        assert c.stats.snapshot().retries >= 3
    healer.join()


def test_dropped_connections_and_a_truncated_body_are_retried(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    admin.set_faults(drop=2)
    assert client.list_tags()
    admin.set_faults(truncated=1)
    assert client.list_tags()
    snap = client.stats.snapshot()
    assert snap.retries == 3
    assert snap.requests[("/manga/tag", "200")] == 3  # one good, one truncated, one good


def test_persistently_truncated_body_is_a_malformed_response(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    admin.set_faults(truncated=10)
    with pytest.raises(MalformedResponseError, match=r"GET /manga/tag: body is not JSON"):
        client.list_tags()
    assert admin.stats()["total"] == 3  # two retries, then a clear error


def test_wrong_shape_is_a_malformed_response_naming_the_endpoint(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    manga_id = some_manga_id(client)
    admin.set_faults(malformed=1)
    with pytest.raises(MalformedResponseError) as err:
        client.get_manga(manga_id)
    assert f"/manga/{manga_id}" in str(err.value)


def test_one_bad_item_is_skipped_and_counted(client: MangaDexClient, admin: SimulatorAdmin) -> None:
    admin.set_faults(bad_items=1)
    newest = client.newest_manga(20)
    assert len(newest) == 19
    assert client.stats.snapshot().items_skipped == 1
    admin.set_faults(bad_items=1, bad_item_kind="bad_date")
    pages = list(client.iter_chapter_pages("createdAt", datetime(2000, 1, 1, tzinfo=UTC)))
    assert sum(p.skipped for p in pages) == 1
    assert client.stats.snapshot().items_skipped == 2


def test_breaker_opens_fails_fast_and_recovers(
    sim: Simulator, admin: SimulatorAdmin, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'mangahub.sqlite'}"
    upgrade(db_url)
    admin.set_faults(error_rate=1.0, error_status=503)
    policy = replace(FAST_POLICY, max_retries=4, breaker_open_seconds=1.0)
    with MangaDexClient(sim.url, state_url=db_url, rate_limit=None, policy=policy) as client:
        clock = FakeClock()  # the open second passes when the test says, not by sleeping
        client.breaker.clock = clock
        for _ in range(2):  # 2 x 5 attempts = 10 consecutive failures
            with pytest.raises(MangaDexUnavailableError, match="failed after 5 attempts: HTTP 503"):
                client.list_tags()
        seen = admin.stats()["total"]
        assert seen == 10
        with pytest.raises(CircuitOpenError) as err:
            client.list_tags()
        assert str(err.value).startswith("MangaDex unavailable: circuit open until ")
        assert "after 10 consecutive failures; last error: HTTP 503 on GET /manga/tag" in str(
            err.value
        )
        assert admin.stats()["total"] == seen  # failed fast: the network was not touched
        with make_engine(db_url).connect() as conn:
            row = conn.execute(select(mangadex_circuit)).one()
        assert row.state == "open" and row.consecutive_failures == 10

        admin.clear_faults()
        clock.advance(1.05)
        assert client.list_tags()  # the half-open trial
        assert client.breaker.state(fresh=True).state == "half_open"
        client.list_tags()
        client.list_tags()
        assert client.breaker.state(fresh=True).state == "closed"
        assert admin.stats()["total"] == seen + 3


def test_keyset_paging_goes_past_the_10000_result_window(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    admin.add_manga(count=10_500, day="2023-02-01")
    since = datetime(2023, 2, 1, tzinfo=UTC)
    until = datetime(2023, 2, 2, tzinfo=UTC)
    ids: list[str] = []
    pages = client.iter_manga_pages(
        "createdAt", since, until, includes=(), content_ratings=ALL_CONTENT_RATINGS
    )
    for page in pages:
        ids.extend(m.id for m in page.items)
        assert all(since <= m.created_at < until for m in page.items)
    assert len(ids) == 10_500 == len(set(ids))
    assert admin.stats()["by_status"] == {"200": admin.stats()["total"]}


def test_keyset_paging_when_a_whole_page_shares_one_second(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    same = "2022-07-07T07:07:07+00:00"
    ids = set(admin.add_manga(count=250, createdAt=same)["ids"])
    admin.add_manga(count=30, day="2022-07-08")
    since = datetime(2022, 7, 7, tzinfo=UTC)
    seen: list[str] = []
    until = datetime(2022, 7, 9, tzinfo=UTC)
    for page in client.iter_manga_pages(
        "createdAt", since, until, content_ratings=ALL_CONTENT_RATINGS
    ):
        seen.extend(m.id for m in page.items)
    assert len(seen) == len(set(seen)) == 280
    assert ids <= set(seen)


def test_until_stops_before_later_items(client: MangaDexClient, admin: SimulatorAdmin) -> None:
    admin.add_manga(count=40, day="2021-03-03")
    admin.add_manga(count=40, day="2021-03-04")
    pages = list(
        client.iter_manga_pages(
            "createdAt",
            datetime(2021, 3, 3, tzinfo=UTC),
            datetime(2021, 3, 4, tzinfo=UTC),
            content_ratings=ALL_CONTENT_RATINGS,
        )
    )
    assert sum(len(p.items) for p in pages) == 40
    assert admin.stats()["requests"]["/manga"] == 1


def test_feed_pages_cover_the_whole_feed(client: MangaDexClient) -> None:
    manga = max(
        client.newest_manga(60),
        key=lambda m: len(client.feed_page(m.id, ["en"], {"createdAt": "asc"}, 500).items),
    )
    whole = client.feed_page(manga.id, ["en"], {"createdAt": "asc"}, 500).items
    assert len(whole) >= 4
    paged = [c for p in client.iter_feed_pages(manga.id, ["en"], limit=3) for c in p.items]
    assert [c.id for c in paged] == [c.id for c in whole]
    assert all(c.manga_id == manga.id and c.translated_language == "en" for c in paged)


def _ping_many(url: str, state_url: str, count: int) -> None:
    # A wider margin than the default: on a loaded CI runner a process can be descheduled
    # between admission and sending for longer than the default 40 ms of slack per second.
    with MangaDexClient(url, state_url=state_url, rate_limit=5.0, rate_margin=0.15) as client:
        for _ in range(count):
            assert client.ping(), client.ping_error


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_three_processes_share_the_rate_limit_with_zero_429s(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        state_url = f"sqlite:///{tmp_path / 'mangahub.sqlite'}"
        upgrade(state_url)
    else:
        from mangasync_pipeline_tests.conftest import drop_pg_database, new_pg_database

        name, state_url = new_pg_database(request.getfixturevalue("pg_template"))
        request.addfinalizer(lambda: drop_pg_database(name))
    with Simulator(seed=3, manga_count=5, rate_limit=5.0) as limited:
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_ping_many, args=(limited.url, state_url, 7)) for _ in range(3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        with SimulatorAdmin(limited.url) as admin:
            stats = admin.stats()
    assert stats["requests"]["/ping"] == 21
    assert stats["rate_limited"] == 0
    assert stats["max_per_second"] <= 5


def test_retrying_stops_as_soon_as_the_breaker_opens(
    admin: SimulatorAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    admin.set_faults(error_rate=1.0, error_status=503)
    policy = replace(FAST_POLICY, max_retries=5, breaker_threshold=3)
    with MangaDexClient(admin.url, rate_limit=None, policy=policy) as client, \
            caplog.at_level("INFO", logger="mangasync.mangadex"):
        with pytest.raises(CircuitOpenError, match="next probe then"):
            client.list_tags()
        with pytest.raises(CircuitOpenError):
            client.list_tags()  # fails fast, no new line
    assert admin.stats()["total"] == 3  # not the 6 attempts the retry budget allowed
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("MangaDex unreachable: circuit open"), lines


def test_unreadable_retry_after_counts_as_absent_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = iter([429, 429, 200, 429, 200])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            status = next(answers)
            body = (b'{"result":"ok","response":"collection","data":[],"limit":0,"offset":0,'
                    b'"total":0}' if status == 200 else b'{"result":"error","errors":[]}')
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "soon, maybe")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with MangaDexClient(url, **FAST) as client, \
                caplog.at_level("WARNING", logger="mangasync.mangadex"):
            assert client.list_tags() == []  # two 429s, then the answer
            assert client.list_tags() == []
            assert client.stats.snapshot().retries == 3
    finally:
        server.shutdown()
        server.server_close()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["ignoring unreadable Retry-After 'soon, maybe' from MangaDex; "
                        "backing off instead"]


def test_a_tick_deadline_cuts_a_hang_and_a_long_retry_after(sim: Simulator, admin: SimulatorAdmin
                                                            ) -> None:
    policy = ClientPolicy(read_timeout=30.0, max_retries=1, backoff_base=0.01, backoff_max=0.05)
    with OutageProxy(sim.url) as proxy, \
            MangaDexClient(proxy.url, rate_limit=None, policy=policy) as client:
        proxy.set_mode("hang")
        client.start_deadline(1.0)  # far below the 30 s read timeout
        with pytest.raises(MangaDexUnavailableError, match=r"within the 1 s deadline of a sensor"):
            client.list_tags()
        proxy.set_mode("up")
        admin.set_faults(burst_429=1, retry_after=5)
        client.start_deadline(2.0)
        with pytest.raises(MangaDexUnavailableError, match=r"within the 2 s deadline.*HTTP 429"):
            client.list_tags()  # waiting 5 s would overrun the tick: give up now
        client.start_deadline(None)
        assert client.list_tags()  # outside a tick the pause is waited out


def _chapters_in_seconds(admin: SimulatorAdmin, count: int, per_second: int,
                         start: datetime) -> tuple[str, set[str]]:
    """A fresh manga with `count` chapters, `per_second` of them in each second from `start`."""
    manga_id = admin.add_manga(title={"en": f"Paged {start:%Y%m%d%H%M%S}"},
                               contentRating="safe")["ids"][0]
    stamps = [(start + timedelta(seconds=i // per_second)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
              for i in range(count)]
    ids = admin.add_chapters([{"manga": manga_id, "chapter": str(i + 1), "group": "Pager",
                               "createdAt": s, "publishAt": s} for i, s in enumerate(stamps)])
    return manga_id, set(ids)


@pytest.mark.parametrize("count", [100, 200, 250])
def test_a_window_of_n_chapters_costs_ceil_n_over_100_pages(
    client: MangaDexClient, admin: SimulatorAdmin, count: int
) -> None:
    """Seven chapters a second, so a page boundary falls inside a second: the pages must
    neither overlap there (a third page for 200) nor lose the second's other chapters."""
    manga_id, ids = _chapters_in_seconds(admin, count, 7, datetime(2019, 5, 5, tzinfo=UTC))
    admin.reset_stats()
    seen = [c.id for p in client.iter_chapter_pages(
        "publishAt", datetime(2019, 5, 5, tzinfo=UTC), manga_id=manga_id) for c in p.items]
    assert len(seen) == len(set(seen)) and set(seen) == ids
    assert admin.stats()["requests"]["/chapter"] == -(-count // 100)


def test_pages_lose_nothing_when_ties_come_back_in_another_order(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    """Chapters of one second may come back in a different order on each request (a search
    cluster's replicas can): no chapter may fall between two pages, none comes twice."""
    manga_id, ids = _chapters_in_seconds(admin, 330, 30, datetime(2019, 6, 6, tzinfo=UTC))
    admin.set_faults(shuffle_ties=1000)
    for _ in range(5):
        seen = [c.id for p in client.iter_chapter_pages(
            "createdAt", datetime(2019, 6, 6, tzinfo=UTC), manga_id=manga_id)
            for c in p.items]
        assert len(seen) == len(set(seen)) and set(seen) == ids


@pytest.mark.parametrize("published_too", [False, True])
def test_chapters_taken_down_between_two_pages_push_nothing_out(
    client: MangaDexClient, admin: SimulatorAdmin, published_too: bool
) -> None:
    """Chapters taken down after the first page, perhaps while another is published (the
    total then stays what it was): pages by position in the whole list would shift and skip
    one; pages anchored on the last second read keep every chapter."""
    start = datetime(2019, 7, 7, tzinfo=UTC) + timedelta(days=30 * published_too)
    stamp = start.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    doomed = admin.add_manga(title={"en": "Taken Down"}, contentRating="safe")["ids"][0]
    admin.add_chapters([{"manga": doomed, "chapter": str(n), "group": "Pager",
                         "language": "la-zz", "createdAt": stamp} for n in range(5)])
    kept = admin.add_manga(title={"en": "Kept"}, contentRating="safe")["ids"][0]
    ids = set(admin.add_chapters([
        {"manga": kept, "chapter": str(n), "group": "Pager", "language": "la-zz",
         "createdAt": (start + timedelta(seconds=1 + n // 7)).strftime("%Y-%m-%dT%H:%M:%S+00:00")}
        for n in range(150)]))
    pages = client.iter_chapter_pages("createdAt", start, languages=("la-zz",))
    seen = [c.id for c in next(pages).items]
    admin.remove_manga(doomed)
    if published_too:
        late = (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        ids |= set(admin.add_chapters([{"manga": kept, "chapter": "999", "group": "Pager",
                                        "language": "la-zz", "createdAt": late}]))
    seen += [c.id for p in pages for c in p.items]
    assert len(seen) == len(set(seen)) and ids <= set(seen)


def test_a_chapter_published_during_a_read_costs_no_extra_page(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    """MangaDex adds chapters all the time, at the end of a list ordered by their timestamp:
    a larger `total` on the second page shifts nothing, so it is no reason to read again."""
    start = datetime(2019, 8, 8, tzinfo=UTC)
    manga_id, ids = _chapters_in_seconds(admin, 150, 7, start)
    admin.reset_stats()
    pages = client.iter_chapter_pages("createdAt", start, manga_id=manga_id)
    seen = [c.id for c in next(pages).items]
    late = (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    ids |= set(admin.add_chapters([{"manga": manga_id, "chapter": "999", "group": "Pager",
                                    "createdAt": late, "publishAt": late}]))
    seen += [c.id for p in pages for c in p.items]
    assert len(seen) == len(set(seen)) and set(seen) == ids
    assert admin.stats()["requests"]["/chapter"] == 2


def test_a_manga_updated_during_an_updated_at_scan_pushes_nothing_out(
    client: MangaDexClient, admin: SimulatorAdmin
) -> None:
    """Updated after the first page, a manga leaves its place for the end of the list: with
    pages by position in the whole list, every later one would shift left and one would fall
    between two pages. Pages anchored on the last second read do not move."""
    day = datetime(2019, 9, 9, tzinfo=UTC)
    admin.add_manga(count=250, day="2019-09-09", contentRating="safe")

    def scan() -> Iterator[Page[Any]]:
        return client.iter_manga_pages("updatedAt", day, day + timedelta(days=1),
                                       content_ratings=("safe",))

    ids = {m.id for p in scan() for m in p.items}
    assert len(ids) > 150  # more than one page
    pages = scan()
    first = next(pages).items
    admin.update_manga(first[5].id, status="completed")  # now updated: out of the day
    seen = [m.id for m in first] + [m.id for p in pages for m in p.items]
    assert set(seen) == ids and len(seen) == len(set(seen))
