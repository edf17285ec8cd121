"""The run command, end to end as an operator starts it, and Ctrl-C (the demo's test, which
also opens its Dagster UI in a browser, is in test_browser.py).

Each test starts the real processes (simulator, notification server, Dagster webserver and
daemon) on free loopback ports and proves that Ctrl-C leaves none of them behind.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mangasync_pipeline.ops.launcher import http_ok, processes_with_env
from mangasync_pipeline.ops.system import free_port

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[1]
TAG = "MANGASYNC_TEST_TAG"


@dataclass
class Session:
    """A command started as in a terminal: its own process group, output read line by line."""

    process: subprocess.Popen[str]
    tag: str
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def wait_for(self, predicate: str | tuple[str, ...], timeout: float) -> str:
        wanted = (predicate,) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if any(w in line for w in wanted):
                return line
        tail = "\n".join(self.seen[-40:])
        raise AssertionError(f"no line with {wanted} within {timeout:.0f}s; output:\n{tail}")

    def ctrl_c(self, timeout: float = 90) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout=timeout)
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code

    def leftovers(self) -> list[int]:
        return processes_with_env(TAG, self.tag)


Starter = Callable[[list[str], dict[str, str]], Session]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Starter]:
    sessions: list[Session] = []

    def _start(argv: list[str], env: dict[str, str]) -> Session:
        tag = uuid.uuid4().hex
        process = subprocess.Popen(
            argv, cwd=tmp_path, env={**os.environ, **env, TAG: tag}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        session = Session(process, tag)

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                session.lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        sessions.append(session)
        return session

    yield _start
    for session in sessions:  # a failed test must not leave a system running
        for pid in session.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# Its own waits add up to more than the suite's default timeout on a slow runner.
@pytest.mark.timeout(900)
def test_run_offline_says_why_keeps_running_and_stops_on_ctrl_c(
    start: Starter, tmp_path: Path
) -> None:
    http, udp, ui = free_port(), free_port(kind=socket.SOCK_DGRAM), free_port()
    dead = free_port()  # nothing listens: MangaDex is unreachable
    # Started in a checkout's root, as scripts/run.sh does: the root's dagster.yaml is the
    # instance in force, here with one setting changed.
    config = (ROOT / "dagster.yaml").read_text()
    assert "max_concurrent_runs: 4" in config
    (tmp_path / "dagster.yaml").write_text(config.replace("max_concurrent_runs: 4",
                                                          "max_concurrent_runs: 3"))
    shutil.copy(ROOT / "workspace.yaml", tmp_path / "workspace.yaml")
    # As scripts/run.sh does before starting the system.
    subprocess.run([sys.executable, "-m", "mangasync_pipeline.cli", "migrate"], cwd=tmp_path,
                   env={**os.environ, "DATABASE_URL": ""}, check=True, capture_output=True)
    session = start(
        [sys.executable, "-m", "mangasync_pipeline.ops.run", "--dagster-port", str(ui)],
        {"MANGADEX_API_URL": f"http://127.0.0.1:{dead}", "MANGASYNC_HTTP_PORT": str(http),
         "MANGASYNC_UDP_PORT": str(udp), "UDP_SERVER_URL": f"http://127.0.0.1:{http}",
         "NEW_MANGA_POLL_INTERVAL": "30s", "DAGSTER_HOME": "", "DATABASE_URL": "",
         # The circuit opens on the third refused connection, within the first sensor tick,
         # instead of after ten (about a minute of ticks and backoff with the defaults).
         "MANGADEX_BREAKER_THRESHOLD": "3", "MANGADEX_BACKOFF_MAX": "1s"})
    session.wait_for("mangasync is running", 240)
    assert http_ok(f"http://127.0.0.1:{ui}/server_info")
    assert http_ok(f"http://127.0.0.1:{http}/health")
    # Embedded defaults: both databases in the working directory, Dagster's under .dagster_home/
    # (git-ignored) and configured by the root's dagster.yaml as edited.
    assert (tmp_path / ".dagster_home" / "history" / "runs.db").exists()
    assert not (tmp_path / ".dagster_home" / "dagster.yaml").exists()
    assert (tmp_path / ".mangasync" / "mangahub.sqlite").exists()
    queue_config = subprocess.run(
        [sys.executable, "-c", "from dagster import DagsterInstance; print(DagsterInstance.get()"
         ".get_concurrency_config().run_queue_config.max_concurrent_runs)"],
        cwd=tmp_path, env={**os.environ, "DAGSTER_HOME": str(tmp_path)}, capture_output=True,
        text=True, timeout=120, check=True)
    assert queue_config.stdout.strip() == "3"

    # The outage is one line when it starts (the breaker opening), not a line per tick.
    session.wait_for("MangaDex unreachable: circuit open until", 180)
    assert session.process.poll() is None, "an unreachable MangaDex must not stop the system"
    running = "\n".join(session.seen)
    assert "Traceback" not in running, "an outage is one line per attempt, not a traceback"
    assert "MangaDex not reachable" not in running  # each quiet tick's skip is DEBUG
    assert "\x1b[" not in running  # the output is a pipe here: no colour codes
    # Dagster warns when a dagster.yaml lies beside a different DAGSTER_HOME: not here.
    assert not [line for line in session.seen
                if "WARNING" in line and ("dagster.yaml" in line or "DAGSTER_HOME" in line)]

    assert session.ctrl_c() == 0
    assert "all stopped" in "\n".join(session.seen)
    assert session.leftovers() == []
