"""The launcher stops everything it started, grandchildren included, even when they resist."""

from __future__ import annotations

import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from mangasync_pipeline.ops.launcher import (
    LAUNCH_MARKER,
    Launcher,
    LaunchError,
    Service,
    processes_with_env,
)

pytestmark = pytest.mark.process

# A service that starts a grandchild and then waits: like `dg dev` with its webserver.
PARENT_WITH_CHILD = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)


def wait_for_text(path: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.05)


def test_stop_reaches_grandchildren_and_kills_the_stubborn(tmp_path: Path) -> None:
    launch_id = uuid.uuid4().hex
    with Launcher(launch_id=launch_id, echo=lambda _line: None) as launcher:
        launcher.start(Service("parent", [sys.executable, "-c", PARENT_WITH_CHILD],
                               output=tmp_path / "parent.log"))
        launcher.start(Service("stubborn", [sys.executable, "-c", STUBBORN],
                               output=tmp_path / "stubborn.log", stop_timeout=1))
        wait_for_text(tmp_path / "parent.log", "ready")
        wait_for_text(tmp_path / "stubborn.log", "ready")
        assert len(processes_with_env(LAUNCH_MARKER, launch_id)) == 3
    assert processes_with_env(LAUNCH_MARKER, launch_id) == []


def test_a_service_that_dies_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    with Launcher(echo=lambda _line: None) as launcher:
        crashing = launcher.start(Service(
            "broken", [sys.executable, "-c", "print('port 8085 is taken'); raise SystemExit(3)"],
            output=tmp_path / "broken.log"))
        with pytest.raises(LaunchError, match=r"(?s)broken exited with code 3.*port 8085 is taken"):
            launcher.wait_until(crashing, lambda: False, 20, "its health check")


def test_supervise_reports_a_service_that_stops(tmp_path: Path) -> None:
    with Launcher(echo=lambda _line: None) as launcher:
        launcher.start(Service("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                               output=tmp_path / "sleeper.log", stop_signal=signal.SIGINT))
        launcher.start(Service("short", [sys.executable, "-c", "raise SystemExit(2)"],
                               output=tmp_path / "short.log"))
        with pytest.raises(LaunchError, match=r"short stopped unexpectedly \(exit code 2\)"):
            launcher.supervise()


# A service that needs a while to stop cleanly, as the Dagster webserver and daemon do.
SLOW_TO_STOP = (
    "import signal, sys, time\n"
    "def stop(*_):\n"
    "    print('term', time.time(), flush=True)\n"
    "    time.sleep(1.5)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)


def test_services_stop_together_and_each_says_when_it_is_gone(tmp_path: Path) -> None:
    said: list[str] = []
    launcher = Launcher(echo=said.append)
    names = [f"slow{n}" for n in range(3)]
    for name in names:
        launcher.start(Service(name, [sys.executable, "-c", SLOW_TO_STOP],
                               output=tmp_path / f"{name}.log"))
    for name in names:
        wait_for_text(tmp_path / f"{name}.log", "ready")
    launcher.stop_all()
    stopped = [line for line in said if " stopped (" in line]
    assert sorted(line.split()[0] for line in stopped) == names
    # All signalled at once: the last was asked to stop before the first was done stopping
    # (one after the other, they would be 1.5 s apart).
    asked = [float((tmp_path / f"{name}.log").read_text().split("term ")[1].split()[0])
             for name in names]
    assert max(asked) - min(asked) < 1.5
