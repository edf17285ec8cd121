"""Busy ports are all named in one message before anything starts, and the pipeline's trigger
URL follows the notification server's port unless UDP_SERVER_URL says otherwise."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mangasync_pipeline.config import Settings, utcnow
from mangasync_pipeline.defs.resources import build_resources
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.testing import add_manga, server_settings
from mangasync_pipeline.ops.system import free_port, port_free
from mangasync_pipeline.sync import outbox

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def taken() -> Iterator[tuple[int, int]]:
    """A TCP and a UDP port on 127.0.0.1 that something else holds."""
    with ExitStack() as stack:
        tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        udp.bind(("127.0.0.1", 0))
        yield tcp.getsockname()[1], udp.getsockname()[1]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_run_names_every_busy_port_in_one_message(taken: tuple[int, int],
                                                  tmp_path: Path) -> None:
    http, udp = taken
    env = {**os.environ, "MANGASYNC_HTTP_PORT": str(http), "MANGASYNC_UDP_PORT": str(udp),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'mangahub.sqlite'}", "DAGSTER_HOME": ""}
    result = subprocess.run(
        [sys.executable, "-m", "mangasync_pipeline.ops.run", "--dagster-port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    line = one_error_line(result)
    assert f"TCP {http} on 127.0.0.1" in line and "change MANGASYNC_HTTP_PORT" in line
    assert f"UDP {udp} on 127.0.0.1" in line and "change MANGASYNC_UDP_PORT" in line
    assert "2 ports in use" in line
    # Nothing was started: no Dagster storage appeared.
    assert not (tmp_path / ".dagster_home").exists()


def test_run_sh_reports_the_same_before_starting(taken: tuple[int, int],
                                                 tmp_path: Path) -> None:
    """The README's command, as a newcomer runs it (the install step is already done)."""
    http, udp = taken
    env = {**os.environ, "MANGASYNC_HTTP_PORT": str(http), "MANGASYNC_UDP_PORT": str(udp),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'mangahub.sqlite'}",
           "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "run.sh"), "--dagster-port",
                             str(free_port())],
                            env=env, capture_output=True, text=True, timeout=300)
    line = one_error_line(result)
    assert "MANGASYNC_HTTP_PORT" in line and "MANGASYNC_UDP_PORT" in line
    assert not (tmp_path / "dagster_home").exists()


def test_demo_names_every_busy_port_and_keeps_the_previous_demo(taken: tuple[int, int],
                                                                tmp_path: Path) -> None:
    http, udp = taken
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "previous.txt").write_text("the last demo's data")
    result = subprocess.run(
        [sys.executable, "-m", "mangasync_pipeline.cli", "demo", "--workdir", str(workdir),
         "--http-port", str(http), "--udp-port", str(udp), "--dagster-port", str(http)],
        cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    line = one_error_line(result)
    assert "3 ports in use" in line
    assert "change --http-port" in line and "change --udp-port" in line
    assert "change --dagster-port" in line
    assert (workdir / "previous.txt").exists(), "a busy port must not wipe the last demo"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "http://localhost:8085"),
    ({"MANGASYNC_HTTP_PORT": "9185"}, "http://localhost:9185"),
    ({"MANGASYNC_HTTP_PORT": "9185", "MANGASYNC_BIND": "0.0.0.0"}, "http://localhost:9185"),
    ({"MANGASYNC_HTTP_PORT": "9185", "MANGASYNC_BIND": "127.0.0.7"}, "http://127.0.0.7:9185"),
    ({"MANGASYNC_HTTP_PORT": "9185", "UDP_SERVER_URL": "http://notify:8085"},
     "http://notify:8085"),
])
def test_trigger_url_follows_the_server_unless_set(env: dict[str, str], expected: str) -> None:
    assert Settings.from_env(env).udp_server_url == expected


def test_pipeline_reaches_a_server_moved_to_another_port(db_url: str, engine: Engine) -> None:
    """Only MANGASYNC_HTTP_PORT changes; the pipeline's notifier still delivers."""
    port = free_port()
    settings = Settings.from_env({"DATABASE_URL": db_url, "MANGASYNC_HTTP_PORT": str(port)})
    manga_id = add_manga(engine, "Little Tower")
    with engine.begin() as conn:
        outbox.enqueue(conn, outbox.NEW_MANGA, {"manga_id": manga_id, "title": "Little Tower"},
                       f"new-manga:{manga_id}", utcnow())
    server = ServerHandle(server_settings(db_url, http_port=port)).start()
    try:
        report = build_resources(settings)["notifier"].deliver(engine)  # type: ignore[attr-defined]
    finally:
        server.stop()
    assert (report.delivered, report.pending) == (1, 0), report.errors


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_a_free_port_is_outside_the_range_the_kernel_assigns_and_can_be_bound(kind: int) -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port(kind=kind) for _ in range(20)}
    assert all(port < low for port in ports)
    for port in ports:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", port))


def test_with_an_ipv6_bind_a_free_port_is_free_and_a_taken_one_is_taken() -> None:
    """MANGASYNC_BIND=:: checked its ports over IPv4 and found every one busy."""
    port = free_port()
    assert port_free("::", port) and port_free("::1", port, socket.SOCK_DGRAM)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as holder:
        holder.bind(("::1", port))
        holder.listen()
        assert not port_free("::1", port)
