"""The demo as a newcomer runs it: its terminal, and its Dagster UI in a real browser
(Playwright driving Debian's Chromium).

The terminal: the banner (the demo user, how another terminal reaches the demo), the
notifications as they arrive, a daemon log without per-tick lines or colour codes, and Ctrl-C
stopping every process. The UI: what an operator looks for first, the asset graph with the
three partitioned assets and the catalogue -> chapters edge, an asset's owner and upstream,
the metadata of a materialization, and the report's tables. One demo serves both: starting
one costs a minute of a CI runner's CPU. Screenshots go to a temporary folder; to refresh
the README's, run with MANGASYNC_SCREENSHOTS=docs/img.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mangasync_pipeline.ops.system import free_port
from mangasync_pipeline_tests import test_ops_run, web
from mangasync_pipeline_tests.test_ops_run import Starter

pytestmark = pytest.mark.browser

# The `start` fixture of the run/demo tests: a demo started as from a terminal, Ctrl-C-able.
launch = test_ops_run.start

CHROMIUM = os.environ.get("MANGASYNC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
ASSETS = ("manga_catalogue", "genre_links", "new_chapters")
UI_TIMEOUT_MS = 90_000  # a busy CI runner renders the first graph slowly


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is not installed: pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium "
                    "(or set MANGASYNC_CHROMIUM)")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                  args=CHROMIUM_FLAGS, timeout=60_000)
        except Error as exc:
            first = str(exc).strip().splitlines()[0]
            pytest.fail(f"Chromium at {CHROMIUM} could not start: {first}")
        yield chromium
        chromium.close()


def expand_all_groups(page: Any) -> None:
    """The global graph shows asset groups collapsed; open each one."""
    for _ in range(10):
        unfold = page.locator('foreignObject [aria-label="unfold_more"]')
        if unfold.count() == 0:
            return
        unfold.first.click()
        page.wait_for_timeout(500)


def frame_the_graph(page: Any) -> None:
    """Room for the graph (navigation and asset tree folded), dragged so all groups show."""
    page.get_by_role("button", name="Hide navigation").click()
    page.locator('button:has([aria-label="panel_show_right"])').last.click()
    page.get_by_text("Loading...").first.wait_for(state="detached")
    # Fitted to the window, four assets in three groups are drawn too small for their
    # partition rows; zoom in until the nodes show them.
    filled = page.get_by_text(re.compile(r"\d+% filled"))
    for _ in range(6):
        page.wait_for_timeout(600)
        if filled.count() > 0:
            break
        page.locator('button:has([aria-label="zoom_in"])').first.click()
    filled.first.wait_for()
    boxes = [b for b in (f.bounding_box() for f in page.locator("foreignObject").all()) if b]
    top, left = min(b["y"] for b in boxes), min(b["x"] for b in boxes)
    canvas = page.locator("svg").filter(has=page.locator("foreignObject")).first.bounding_box()
    # Drag from an empty spot so the top-left group sits just under the toolbar.
    x, y = canvas["x"] + canvas["width"] - 150, top - 20
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + (40 + 40 - left), y + (130 - top), steps=10)
    page.mouse.up()
    page.wait_for_timeout(800)


def check_asset_graph(page: Any, ui: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui}/asset-groups")
    page.locator("foreignObject").first.wait_for()
    expand_all_groups(page)
    frame_the_graph(page)
    for asset in ASSETS:
        node = page.locator("foreignObject", has=page.get_by_text(asset, exact=True))
        # Partitioned assets carry a "Partitions" row in their node, with how many are filled.
        expect(node.first).to_contain_text(re.compile(r"Partitions\s*\d+% filled"))
    expect(page.locator("foreignObject", has=page.get_by_text("mangahub_report", exact=True))
           .first).to_be_visible()


def check_lineage_and_owner(page: Any, ui: str) -> None:
    """new_chapters names manga_catalogue upstream; its owner is the team."""
    page.goto(f"{ui}/assets/new_chapters")
    page.get_by_text("team:mangasync").or_(page.get_by_text("mangasync", exact=True)) \
        .first.wait_for()
    page.get_by_role("link", name="manga_catalogue").first.wait_for()
    page.goto(f"{ui}/assets/new_chapters?view=lineage&lineageScope=upstream")
    page.locator("foreignObject", has=page.get_by_text("manga_catalogue", exact=True)) \
        .first.wait_for()


LAUNCH_REPORT = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


def materialize_report(ui: str) -> None:
    """What "Materialize" on mangahub_report does, through the webserver's GraphQL."""
    selector = {"repositoryLocationName": "mangasync", "repositoryName": "__repository__",
                "jobName": "mangahub_report_job"}
    answer = web.post(f"{ui}/graphql", timeout=60, json={
        "query": LAUNCH_REPORT, "variables": {"params": {"selector": selector}}}).json()
    assert answer["data"]["launchRun"]["__typename"] == "LaunchRunSuccess", answer


def check_report_tables(page: Any, ui: str) -> None:
    page.goto(f"{ui}/assets/mangahub_report?view=events")
    page.get_by_text("manga_by_status", exact=True).first.wait_for()
    page.get_by_text("chapters_per_language_per_day", exact=True).first.wait_for()
    # Table metadata renders as a table with its column names, not as text.
    page.locator("table").filter(has=page.get_by_text("status", exact=True)).first.wait_for()


# Its own waits add up to more than the suite's default timeout on a slow runner.
@pytest.mark.timeout(900)
def test_the_demo_in_its_terminal_and_its_dagster_ui(launch: Starter, browser: Any,
                                                    tmp_path: Path) -> None:
    ui_port, http_port, mangadex_port = free_port(), free_port(), free_port()
    session = launch(
        [sys.executable, "-m", "mangasync_pipeline.cli", "demo", "--manga", "80",
         "--initial-sync", "20", "--publish-every", "3", "--poll-interval", "10s",
         "--dagster-port", str(ui_port), "--http-port", str(http_port),
         "--udp-port", str(free_port(kind=socket.SOCK_DGRAM)),
         "--mangadex-port", str(mangadex_port)],
        {})
    session.wait_for("appear below as they arrive", 300)  # the initial sync has materialized
    token_line = next(line for line in session.seen if "demo user" in line)
    assert "token " in token_line
    assert any(f"Dagster UI           http://127.0.0.1:{ui_port}" in s for s in session.seen)
    # Another terminal is told how to reach the demo's simulator, never the real MangaDex.
    export = next(line for line in session.seen if "export " in line)
    assert f"MANGADEX_API_URL=http://127.0.0.1:{mangadex_port}" in export
    assert f"NOTIFY_SERVER_URL=http://127.0.0.1:{http_port}" in export
    ui = f"http://127.0.0.1:{ui_port}"
    shots = Path(os.environ.get("MANGASYNC_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    # `dg dev` started without Dagster's warning about a dagster.yaml it would ignore.
    dagster_logs = "".join(p.read_text() for p in tmp_path.rglob("dagster.log"))
    assert dagster_logs and "Found a dagster instance configuration" not in dagster_logs
    materialize_report(ui)

    page = browser.new_page(viewport={"width": 1280, "height": 850})
    page.set_default_timeout(UI_TIMEOUT_MS)
    check_asset_graph(page, ui)
    page.screenshot(path=shots / "asset-graph.png")
    check_lineage_and_owner(page, ui)
    check_report_tables(page, ui)
    page.screenshot(path=shots / "report-tables.png")

    page.goto(f"{ui}/assets/manga_catalogue?view=events")
    page.get_by_text("Metadata", exact=True).first.wait_for()
    # The newest event may be the quiet poll's observation (no partition); a materialization
    # is listed with its day. Its metadata lists what the sync wrote: the initial sync
    # records manga_imported per partition, a catalogue run manga_inserted and more, a
    # refresh of manga that changed on MangaDex manga_updated.
    page.get_by_text(re.compile(r"^\d{4}-\d{2}-\d{2}$")).first.click()
    written = ("manga_imported", "manga_inserted", "manga_updated")
    page.get_by_text(re.compile(rf"^({'|'.join(written)})$")).first.wait_for()
    assert page.get_by_text("No metadata entries").count() == 0
    page.screenshot(path=shots / "materialization-metadata.png")

    page.goto(f"{ui}/assets/manga_catalogue?view=partitions")
    page.get_by_text("Partitions", exact=True).first.wait_for()
    # Each day a sync touched is a materialized partition.
    page.get_by_text(re.compile(r"Materialized \([1-9]\d*\)")).first.wait_for()
    page.close()

    # The demo user's first notification, within a minute of the banner on an idle machine
    # (usually during the checks above); the margin is for CI runners busy with other tests.
    first = session.wait_for(("NEW_MANGA", "NEW_CHAPTER"), 150)
    assert "New manga" in first or "Chapter" in first
    workdir = tmp_path / ".mangasync" / "demo"
    assert (workdir / "mangahub.sqlite").exists()
    # The daemon's log tells of runs, not of every quiet tick, and holds no colour codes.
    dagster_log = (workdir / "logs" / "dagster.log").read_text()
    assert "Launched 1 runs" in dagster_log or "Launching run for" in dagster_log
    assert "Checking for new runs for sensor" not in dagster_log
    assert " skipped: " not in dagster_log
    assert "\x1b[" not in dagster_log

    assert session.ctrl_c() == 0
    said = "\n".join(session.seen)
    assert "all stopped" in said
    assert "mangadex stopped (" in said and "server stopped (" in said  # while it stops
    assert session.leftovers() == []
