"""One odd MangaDex record never stops sync: hostile records served by the simulator over real
HTTP, in the same runs as innocent ones, on both databases. The innocent ones are stored and
announced exactly once, the odd ones quarantined with their reason, every run succeeds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from mangasync_pipeline.db.tables import chapters, manga, quarantined_records, sync_metrics
from mangasync_pipeline.notify.triggers import NewChapter, NewManga
from mangasync_pipeline.sync import quarantine, state
from mangasync_pipeline.sync.catalogue import PollCursor
from mangasync_pipeline.sync.notifier import Notifier
from mangasync_pipeline_tests import web
from mangasync_pipeline_tests.receiver import Receiver
from mangasync_pipeline_tests.sync_helpers import Pipeline, outbox_rows, settings_for
from mangasync_pipeline_tests.test_sync_chapters import World, world  # noqa: F401

# label (or attribute overrides) -> the field its quarantine row names
HOSTILE_CHAPTERS: list[tuple[str, dict[str, Any]]] = [
    ("chapter", {"chapter": "12345678901234567"}),  # over the 16 characters of the column
    ("volume", {"chapter": "40", "volume": "v" * 17}),
    ("chapter", {"chapter": "1234567890123"}),  # 13 digits: NUMERIC(12, 3) holds 9
    ("pages", {"chapter": "41", "pages": 10**12}),
    ("chapter", {"chapter": "٩٩٩"}),  # Arabic-Indic digits, read as 999 before
    ("chapter", {"chapter": "９９８"}),  # full-width digits
    ("chapter", {"chapter": "1e308"}),
    ("chapter", {"chapter": "NaN"}),
    ("chapter", {"chapter": "-1"}),
    ("chapter", {"chapter": "x" * 33}),  # the server's 32-character label limit
    ("translatedLanguage", {"chapter": "42", "attributes": {"translatedLanguage": "en"}}),
    ("pages", {"chapter": "43", "attributes": {"pages": -5}}),
    ("updatedAt", {"chapter": "44", "updatedAt": "9999-12-31T23:59:59Z"}),
    ("chapter", {"chapter": "-2", "type": "manga"}),  # claims to be a manga: still a chapter
]


def _quarantined(engine: Engine, source: str) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        return {r.mangadex_id: (r.field, r.reason) for r in conn.execute(
            select(quarantined_records).where(quarantined_records.c.source == source))}


def _server_accepts(payload: dict[str, Any], kind: str) -> None:
    """What the notification server's own validation says of a trigger."""
    (NewChapter if kind == "new-chapter" else NewManga).model_validate(payload)


def test_hostile_chapters_are_quarantined_and_innocent_ones_announced_once(
        world: World, receiver: Receiver) -> None:  # noqa: F811 - the imported fixture
    mid = world.add_manga("Crowded Feed", last_chapter="")
    # The chapters come out after the manga was catalogued (within its second): they are news.
    now = datetime.now(UTC).replace(microsecond=0)
    innocent = world.add_chapters(mid, [("1", now), ("2", now), ("EXTRA", now)])
    hostile: dict[str, str] = {}
    for field, spec in HOSTILE_CHAPTERS:
        when = now.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        extra = dict(spec)
        if field == "translatedLanguage":
            # A language code longer than the column, among the followed languages' chapters.
            extra["attributes"] = {"translatedLanguage": "en-" + "x" * 20}
            extra["language"] = "en"
        body = {"manga": mid, "group": "Odd Scans", "createdAt": when, "publishAt": when,
                **extra}
        hostile[world.admin("POST", "/_sim/chapters", [body])["ids"][0]] = field

    # A Dagster run of today's partition, as the schedule or a backfill would start it.
    pipeline = Pipeline(settings_for(world.db_url, world.sim.url, receiver.url))
    run = pipeline.run("new_chapters_job", partition_key=now.date().isoformat())
    assert run.success
    meta = run.asset_materializations_for_node("new_chapters")[0].metadata
    assert meta["items_quarantined"].value == len(hostile)
    assert meta["outbox_delivered"].value == 3
    assert meta["quarantined_records"].value == len(hostile)
    with world.engine.connect() as conn:
        stored = set(conn.execute(select(chapters.c.mangadex_chapter_id)).scalars())
    assert set(innocent) <= stored and not stored & set(hostile)
    found = _quarantined(world.engine, "chapter")
    assert {i: f for i, (f, _) in found.items()} == hostile
    assert all(reason.startswith(f"{field}: ") for field, reason in found.values())
    assert "999" not in {p["chapter"] for p in world.payloads()}
    assert sorted(p["label"] or "" for p in world.payloads()) == ["1", "2", "EXTRA"]

    for body in receiver.of_kind("new-chapter"):
        _server_accepts(body, "new-chapter")
    assert len(receiver.of_kind("new-chapter")) == 3

    # The next poll announces nothing again, and leaves the quarantine as it was.
    again = world.poll()
    assert again.notifications == 0 and again.quarantined == 0
    with Notifier(receiver.url) as notifier:
        notifier.deliver(world.engine)
    assert len(receiver.of_kind("new-chapter")) == 3
    assert set(_quarantined(world.engine, "chapter")) == set(hostile)
    with world.engine.connect() as conn:
        gauge = conn.execute(select(sync_metrics.c.value).where(
            sync_metrics.c.name == "quarantined_records",
            sync_metrics.c.labels == "source=chapter")).scalar()
    assert gauge == len(hostile)  # what /metrics shows as mangasync_quarantined_records


def test_quarantined_chapters_are_read_again_once_due(world: World) -> None:  # noqa: F811
    mid = world.add_manga("Second Look", last_chapter="")
    now = datetime.now(UTC).replace(microsecond=0)
    odd = world.add_chapters(mid, [("٣", now - timedelta(minutes=3))])[0]
    world.poll()
    assert set(_quarantined(world.engine, "chapter")) == {odd}
    assert world.poll().retry_requests == 0  # not due yet: no request for it

    with world.engine.begin() as conn:
        conn.execute(update(quarantined_records).values(
            last_seen=now - quarantine.RETRY_AFTER - timedelta(minutes=1)))
    report = world.poll()
    assert report.retry_requests == 1  # one request for up to 100 records
    with world.engine.connect() as conn:
        seen = conn.execute(select(quarantined_records.c.last_seen)).scalar()
    assert seen > now - timedelta(minutes=1)  # still odd on MangaDex: still quarantined


def test_hostile_manga_are_quarantined_and_the_cursor_never_jumps(
        make_simulator: Any, db_url: str, engine: Engine, receiver: Receiver) -> None:
    sim = make_simulator(manga_count=50, chapters_per_manga=0)
    pipeline = Pipeline(settings_for(db_url, sim.url, receiver.url))
    pipeline.run("initial_sync_job")
    assert pipeline.evaluate_sensor("new_manga_sensor") == []

    def add(**fields: Any) -> str:
        return httpx_admin(sim.url, "POST", "/_sim/manga",
                           {"contentRating": "safe", **fields})["ids"][0]

    innocent = [add(title={"en": "Plain One"}), add(title={"en": "Plain Two"})]
    odd = {
        add(title={"en": "Endless"}, lastChapter="9" * 20): "lastChapter",
        add(title={"en": "Chatty"}, status="s" * 30): "status",
        add(title={"en": "Far Future"}, updatedAt="9999-12-31T23:59:59Z"): "updatedAt",
        add(title={"en": "Odd Rating"}, contentRating="safe",
            attributes={"contentRating": "r" * 17}): "contentRating",
    }
    results = pipeline.run_requests(pipeline.evaluate_sensor("new_manga_sensor"))
    assert results and all(r.success for r in results)
    with engine.connect() as conn:
        catalogued = set(conn.execute(select(manga.c.mangadex_id)).scalars())
        cursor = PollCursor.decode(state.get_state(conn, state.NEW_MANGA_POLL)["last_cursor"])
    assert set(innocent) <= catalogued and not catalogued & set(odd)
    assert {i: f for i, (f, _) in _quarantined(engine, "manga").items()} == odd
    assert cursor is not None and cursor.since.year == datetime.now(UTC).year
    announced = receiver.of_kind("new-manga")
    assert sorted(a["dedup_key"] for a in announced) == sorted(
        f"new-manga:{i}" for i in innocent)
    for body in announced:
        _server_accepts(body, "new-manga")

    # A manga created later is still found: the cursor is not stuck in year 9999.
    later = add(title={"en": "Plain Three"})
    pipeline.run_requests(pipeline.evaluate_sensor("new_manga_sensor"))
    assert f"new-manga:{later}" in {a["dedup_key"] for a in receiver.of_kind("new-manga")}

    # MangaDex fixes one: its next poll catalogues it and releases it from quarantine.
    endless = next(i for i, f in odd.items() if f == "lastChapter")
    httpx_admin(sim.url, "PATCH", f"/_sim/manga/{endless}", {"lastChapter": "12"})
    pipeline.run_requests(pipeline.evaluate_sensor("new_manga_sensor"))
    with engine.connect() as conn:
        assert conn.execute(select(manga.c.total_chapters).where(
            manga.c.mangadex_id == endless)).scalar() == 12
    assert endless not in _quarantined(engine, "manga")
    assert len(outbox_rows(engine, "new-manga")) == len(innocent) + 2


def httpx_admin(url: str, method: str, path: str, body: Any = None) -> Any:

    response = web.request(method, f"{url}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_an_innocent_manga_is_catalogued_after_its_run_once_failed(
        make_simulator: Any, db_url: str, engine: Engine) -> None:
    sim = make_simulator(manga_count=20, chapters_per_manga=0)
    pipeline = Pipeline(settings_for(db_url, sim.url))
    pipeline.run("initial_sync_job")
    assert pipeline.evaluate_sensor("new_manga_sensor") == []
    innocent = httpx_admin(sim.url, "POST", "/_sim/manga",
                           {"contentRating": "safe", "title": {"en": "Unlucky"}})["ids"][0]
    first = pipeline.evaluate_sensor("new_manga_sensor")
    httpx_admin(sim.url, "POST", "/_sim/faults", {"error_rate": 1.0, "error_status": 500})
    failed = pipeline.run_requests(first, raise_on_error=False)
    assert failed and not failed[0].success
    httpx_admin(sim.url, "DELETE", "/_sim/faults")

    # The next tick finds the same manga again and asks under a key not spent yet.
    again = pipeline.evaluate_sensor("new_manga_sensor")
    assert [r.run_key for r in again] == [f"{first[0].run_key}:again-1"]
    assert all(r.success for r in pipeline.run_requests(again))
    with engine.connect() as conn:
        assert conn.execute(select(manga.c.title).where(
            manga.c.mangadex_id == innocent)).scalar() == "Unlucky"
    # Once it succeeded, the work is done: nothing is asked for again.
    assert pipeline.evaluate_sensor("new_manga_sensor") == []


def test_a_trigger_the_server_refuses_is_marked_counted_and_fails_a_check(
        server: Any, db_url: str, engine: Engine, make_simulator: Any) -> None:
    from mangasync_pipeline.notify.testing import add_manga
    from mangasync_pipeline.ops.status import collect_status
    from mangasync_pipeline.sync import outbox

    local = add_manga(engine, "Known")
    now = datetime.now(UTC)
    with engine.begin() as conn:  # one the server takes, one it refuses (no such manga)
        outbox.enqueue(conn, outbox.NEW_MANGA, {"manga_id": local, "title": "Known"},
                       "new-manga:known", now)
        outbox.enqueue(conn, outbox.NEW_MANGA, {"manga_id": 999_999, "title": "Ghost"},
                       "new-manga:ghost", now)
    with Notifier(server.http_url) as notifier:
        report = notifier.deliver(engine)
    assert (report.delivered, report.rejected, report.pending) == (1, 1, 0)
    rows = {r.dedup_key: r for r in outbox_rows(engine)}
    assert rows["new-manga:ghost"].status == "rejected"
    assert rows["new-manga:ghost"].delivered_at is None and rows["new-manga:ghost"].last_error

    scraped = web.get(f"{server.http_url}/metrics", timeout=10).text
    assert 'mangasync_notifications_refused_total{kind="new-manga"} 1.0' in scraped
    # The accepted one is the seed's notifications-sent counter, by notification type.
    assert 'mangasync_mangadex_notifications_sent_total{type="NEW_MANGA"} 1.0' in scraped

    status = collect_status(engine)
    assert status.outbox_refused == 1
    assert any("refused by the server" in p for p in status.problems)

    # The outbox's asset checks show it, evaluated on their own schedule whether or not
    # anything was synced since; a catalogue run no longer stands in for them.
    sim = make_simulator(manga_count=5, chapters_per_manga=0)
    pipeline = Pipeline(settings_for(db_url, sim.url, server.http_url))
    run = pipeline.run("catalogue_job", partition_key=datetime.now(UTC).date().isoformat())
    ran = {e.check_name for e in run.get_asset_check_evaluations()}
    assert "no_quarantined_manga" in ran and "no_refused_notifications" not in ran
    run = pipeline.run("outbox_checks_job")
    checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
    assert not checks["no_refused_notifications"].passed
    assert checks["no_refused_notifications"].metadata["refused"].value == 1
    assert checks["notification_outbox_backlog"].passed  # the refused one waits for nothing


def test_status_and_the_asset_check_show_the_quarantine(
        world: World) -> None:  # noqa: F811
    from mangasync_pipeline.ops.status import collect_status, render_table

    mid = world.add_manga("Shown", last_chapter="")
    world.add_chapters(mid, [("NaN", datetime.now(UTC))])
    world.poll()
    status = collect_status(world.engine)
    assert status.quarantined == 1 and not status.problems
    text = render_table(status)
    assert "quarantined:    1 MangaDex records" in text
    assert "chapter: 'NaN' is not a non-negative decimal of ASCII digits" in text
    pipeline = Pipeline(settings_for(world.db_url, world.sim.url))
    run = pipeline.run("new_chapters_job", partition_key=datetime.now(UTC).date().isoformat())
    assert run.success
    meta = run.asset_materializations_for_node("new_chapters")[0].metadata
    assert meta["quarantined_records"].value == 1
    assert meta["items_quarantined"].value == 0  # quarantined by the earlier poll
    checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
    assert not checks["no_quarantined_chapters"].passed
    assert checks["no_quarantined_chapters"].metadata["quarantined"].value == 1


def test_a_record_whose_storing_raises_is_quarantined_with_a_one_line_reason(
        world: World) -> None:  # noqa: F811
    from sqlalchemy import text

    with world.engine.begin() as conn:  # the database refuses one record, as nothing else does
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE chapters ADD CONSTRAINT odd_label "
                              "CHECK (label IS DISTINCT FROM '13')"))
        else:
            conn.execute(text("CREATE TRIGGER odd_label BEFORE INSERT ON chapters "
                              "WHEN NEW.label = '13' BEGIN SELECT RAISE(ABORT, 'odd label'); "
                              "END"))
    mid = world.add_manga("Unlucky Thirteen", last_chapter="")
    now = datetime.now(UTC)
    made = world.add_chapters(mid, [("12", now), ("13", now), ("14", now)])
    report = world.poll()
    assert sorted(p["label"] for p in world.payloads()) == ["12", "14"]
    assert report.quarantined == 1 and report.stored == 2
    [(field, reason)] = _quarantined(world.engine, "chapter").values()
    assert field == "item" and reason.startswith("IntegrityError: ")
    assert "\n" not in reason and len(reason) <= 300
    assert set(_quarantined(world.engine, "chapter")) == {made[1]}


def test_a_cursor_poisoned_before_the_fix_recovers(
        make_simulator: Any, db_url: str, engine: Engine) -> None:
    sim = make_simulator(manga_count=20, chapters_per_manga=0)
    pipeline = Pipeline(settings_for(db_url, sim.url))
    pipeline.run("initial_sync_job")
    # What the sensor stored before the fix, after reading one manga stamped in year 9999.
    poisoned = PollCursor(datetime(9999, 12, 31, tzinfo=UTC),
                          datetime.now(UTC) - timedelta(minutes=5))
    pipeline.sensor_cursor = poisoned.encode()
    fresh = httpx_admin(sim.url, "POST", "/_sim/manga", {"contentRating": "safe"})["ids"][0]
    requests = pipeline.evaluate_sensor("new_manga_sensor")
    assert [r.run_config["ops"]["catalogue"]["config"]["mangadex_ids"] for r in requests] == [
        [fresh]]
    cursor = PollCursor.decode(pipeline.sensor_cursor)
    assert cursor is not None and cursor.since.year == datetime.now(UTC).year



def test_manga_of_a_failed_run_are_asked_for_again_once_the_cursor_passed_them(
        make_simulator: Any, db_url: str, engine: Engine) -> None:
    sim = make_simulator(manga_count=20, chapters_per_manga=0)
    pipeline = Pipeline(settings_for(db_url, sim.url))
    pipeline.run_requests(pipeline.evaluate_sensor("new_manga_sensor"))  # the starting point
    half_hour_ago = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")
    older = httpx_admin(sim.url, "POST", "/_sim/manga", {
        "contentRating": "safe", "createdAt": half_hour_ago})["ids"][0]
    newer = httpx_admin(sim.url, "POST", "/_sim/manga", {"contentRating": "safe"})["ids"][0]
    first = pipeline.evaluate_sensor("new_manga_sensor")
    assert {older, newer} <= {i for r in first for i in
                              r.run_config["ops"]["catalogue"]["config"]["mangadex_ids"]}
    httpx_admin(sim.url, "POST", "/_sim/faults", {"error_rate": 1.0, "error_status": 500})
    assert not any(r.success for r in pipeline.run_requests(first, raise_on_error=False))
    httpx_admin(sim.url, "DELETE", "/_sim/faults")

    # The cursor is now at `newer`: a scan no longer reaches `older`, the failed run does.
    again = pipeline.evaluate_sensor("new_manga_sensor")
    assert all(r.success for r in pipeline.run_requests(again))
    with engine.connect() as conn:
        stored = set(conn.execute(select(manga.c.mangadex_id)).scalars())
    assert {older, newer} <= stored
    assert pipeline.evaluate_sensor("new_manga_sensor") == []  # done: not asked for again


def test_a_change_whose_refresh_run_failed_is_asked_for_again_once_the_cursor_passed_it(
        make_simulator: Any, db_url: str, engine: Engine) -> None:
    from mangasync_pipeline.sync.catalogue import SILENT, import_ids
    from mangasync_pipeline_tests.sync_helpers import client_for

    sim = make_simulator(manga_count=5, chapters_per_manga=0)
    settings = settings_for(db_url, sim.url)
    pipeline = Pipeline(settings)
    now = datetime.now(UTC)

    def stamp(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S")

    def refreshed(requests: list[Any]) -> list[list[str]]:
        return [sorted(r.run_config["ops"]["refresh_manga"]["config"]["mangadex_ids"])
                for r in requests if r.job_name == "refresh_manga_job"]

    def title() -> str:
        with engine.connect() as conn:
            return str(conn.execute(select(manga.c.title).where(
                manga.c.mangadex_id == renamed)).scalar())

    def rename_and_fail(name: str, renamed_at: datetime) -> None:
        """Rename the manga; a new manga a minute ago moves the cursor past the rename; the
        refresh run (and the new manga's catalogue run) fail."""
        httpx_admin(sim.url, "PATCH", f"/_sim/manga/{renamed}", {
            "title": {"en": name}, "updatedAt": stamp(renamed_at)})
        a_minute_ago = stamp(datetime.now(UTC) - timedelta(minutes=1))
        httpx_admin(sim.url, "POST", "/_sim/manga", {
            "contentRating": "safe", "createdAt": a_minute_ago, "updatedAt": a_minute_ago})
        requests = pipeline.evaluate_sensor("new_manga_sensor")
        assert refreshed(requests) == [[renamed]] and len(requests) == 2
        httpx_admin(sim.url, "POST", "/_sim/faults", {"error_rate": 1.0, "error_status": 500})
        assert not any(r.success for r in pipeline.run_requests(requests,
                                                                raise_on_error=False))
        httpx_admin(sim.url, "DELETE", "/_sim/faults")

    two_hours_ago = stamp(now - timedelta(hours=2))
    renamed = httpx_admin(sim.url, "POST", "/_sim/manga", {
        "title": {"en": "Old Name"}, "contentRating": "safe", "createdAt": two_hours_ago,
        "updatedAt": two_hours_ago})["ids"][0]
    with client_for(settings) as client:
        import_ids(engine, client, [renamed], policy=SILENT)
    pipeline.sensor_cursor = PollCursor(now - timedelta(minutes=45),
                                        now - timedelta(minutes=45)).encode()
    rename_and_fail("New Name", now - timedelta(minutes=30))

    # A scan no longer reaches the rename (ten minutes of lookback): the failed run does.
    again = pipeline.evaluate_sensor("new_manga_sensor")
    assert refreshed(again) == [[renamed]]
    assert all(r.success for r in pipeline.run_requests(again))
    assert title() == "New Name"
    assert pipeline.evaluate_sensor("new_manga_sensor") == []  # done: not asked for again

    # It changes and fails again: its retry is a new run, not a repeat of the first retry
    # (which succeeded: the daemon would drop it as a duplicate run key).
    pipeline.sensor_cursor = PollCursor(now - timedelta(minutes=25),
                                        now - timedelta(minutes=45)).encode()
    rename_and_fail("Newest Name", now - timedelta(minutes=20))
    retried = pipeline.run_requests(pipeline.evaluate_sensor("new_manga_sensor"))
    assert [r.success for r in retried] == [True, True]
    assert title() == "Newest Name"


def test_failed_refresh_runs_are_asked_for_again_for_a_day_not_for_ever(
        make_simulator: Any, db_url: str, engine: Engine) -> None:
    """A streak of failed runs is retried for 24 hours from its first failure, which the
    retries carry in a tag; after that the manga is left (every failed run was alerted)."""
    from mangasync_pipeline.defs.sensors import FAILING_SINCE_TAG, SENSOR_TAG
    from mangasync_pipeline.sync.catalogue import SILENT, import_ids
    from mangasync_pipeline_tests.sync_helpers import client_for

    sim = make_simulator(manga_count=5, chapters_per_manga=0)
    settings = settings_for(db_url, sim.url)
    pipeline = Pipeline(settings)
    *ids, fresh = [httpx_admin(sim.url, "POST", "/_sim/manga", {"contentRating": "safe"})[
        "ids"][0] for _ in range(3)]
    with client_for(settings) as client:
        import_ids(engine, client, [*ids, fresh], policy=SILENT)
    pipeline.run_requests(pipeline.evaluate_sensor("new_manga_sensor"))  # the starting point
    now = datetime.now(UTC)
    httpx_admin(sim.url, "POST", "/_sim/faults", {"error_rate": 1.0, "error_status": 500})
    # One retry run of both: the first has failed for 25 hours, the second for 23; a third
    # manga in the same run is a fresh find (its streak begins with this run).
    starts = {ids[0]: int((now - timedelta(hours=25)).timestamp()),
              ids[1]: int((now - timedelta(hours=23)).timestamp())}
    failed = pipeline.run("refresh_manga_job", raise_on_error=False,
                          run_config={"ops": {"refresh_manga": {"config": {
                              "mangadex_ids": [*ids, fresh]}}}},
                          tags={**SENSOR_TAG, FAILING_SINCE_TAG: json.dumps(starts)})
    assert not failed.success
    httpx_admin(sim.url, "DELETE", "/_sim/faults")
    requests = pipeline.evaluate_sensor("new_manga_sensor")
    assert [sorted(r.run_config["ops"]["refresh_manga"]["config"]["mangadex_ids"])
            for r in requests] == [sorted([ids[1], fresh])]  # 23 hours: still; 25: no more
    carried = json.loads(requests[0].tags[FAILING_SINCE_TAG])
    assert carried[ids[1]] == starts[ids[1]] and carried[fresh] > starts[ids[1]]


def test_a_tick_without_failed_runs_reads_no_run_records(
        make_simulator: Any, db_url: str, engine: Engine) -> None:
    """The sensor looks for failed runs first: with none, the successes of its earlier runs
    are not read (it read up to 2,000 run records every tick)."""
    from mangasync_pipeline.defs.sensors import SENSOR_TAG

    sim = make_simulator(manga_count=5, chapters_per_manga=0)
    pipeline = Pipeline(settings_for(db_url, sim.url))
    pipeline.run_requests(pipeline.evaluate_sensor("new_manga_sensor"))  # the starting point
    day = datetime.now(UTC).date().isoformat()
    for _ in range(4):  # earlier runs of this sensor, all succeeded
        ids = [httpx_admin(sim.url, "POST", "/_sim/manga", {"contentRating": "safe"})["ids"][0]]
        assert pipeline.run("catalogue_job", partition_key=day, tags=SENSOR_TAG, run_config={
            "ops": {"catalogue": {"config": {"mangadex_ids": ids}}}}).success
    read: list[int] = []
    real = pipeline.instance.get_run_records

    def counted(*args: Any, **kwargs: Any) -> Any:
        records = real(*args, **kwargs)
        read.append(len(records))
        return records

    pipeline.instance.get_run_records = counted  # type: ignore[method-assign]
    pipeline.evaluate_sensor("new_manga_sensor")
    assert read and sum(read) == 0
