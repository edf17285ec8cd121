"""The long-running parts of mangasync on one machine: notification server and Dagster
(webserver and daemon, as in production), shared by `scripts/run.sh` and `mangasync demo`."""

from __future__ import annotations

import json
import random
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from mangasync_pipeline.config import Settings
from mangasync_pipeline.ops.launcher import (
    Launcher,
    LaunchError,
    Running,
    Service,
    http_ok,
    python_command,
)

DEFINITIONS_MODULE = "mangasync_pipeline.definitions"
LOCATION_NAME = "mangasync"


@dataclass(frozen=True)
class Endpoints:
    dagster_ui: str
    server_http: str
    server_udp: str


def local_dagster_home(env: Mapping[str, str], cwd: Path) -> Path:
    """The DAGSTER_HOME of the local stack: DAGSTER_HOME if set; else the folder started in
    when it holds a dagster.yaml (a checkout's root: its dagster.yaml is the instance config in
    force, storage under .dagster_home/); else .dagster_home/ there, from the packaged config."""
    if env.get("DAGSTER_HOME"):
        return Path(env["DAGSTER_HOME"])
    return cwd if (cwd / "dagster.yaml").exists() else cwd / ".dagster_home"


def prepare_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME with an instance config and the workspace Dagster loads.

    Files are written only when missing, so an operator's edits survive restarts (and a
    checkout's own dagster.yaml and workspace.yaml are used as they stand). The workspace
    names the code location as workspace.yaml and production do (`mangasync`), wherever the
    system is started from."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text((files("mangasync_pipeline.ops") / "dagster_home.yaml").read_text())
    workspace = home / "workspace.yaml"
    if not workspace.exists():
        workspace.write_text(json.dumps({"load_from": [{"python_module": {
            "module_name": DEFINITIONS_MODULE, "attribute": "defs",
            "location_name": LOCATION_NAME}}]}))
    return home


def local_address(bind: str) -> str:
    """Where a process on this machine reaches a listener bound to `bind`."""
    return "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind


def port_free(host: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    # The family of the address the service will bind: `::` (MANGASYNC_BIND) is IPv6.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """Where the ports the kernel assigns by itself begin (Linux's default when unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port free now that stays free until it is bound, seconds later, by another process.

    Ports the kernel assigns (to every socket that connects or sends unbound) could be taken in
    between, so the port comes from below their range, where only an explicit bind takes one."""
    low = _ephemeral_low()
    if low > 10_000:
        for _ in range(50):
            port = random.randrange(10_000, low)
            if port_free(host, port, kind):
                return port
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pick_port(preferred: int, host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """`preferred` when it is free, else any free port (for the demo, beside a running system)."""
    return preferred if port_free(host, preferred, kind) else free_port(host, kind)


@dataclass(frozen=True)
class PortNeed:
    """A port the system is about to listen on, and the setting that chooses it."""

    host: str
    port: int
    what: str
    setting: str
    kind: int = socket.SOCK_STREAM

    def describe(self) -> str:
        proto = "UDP" if self.kind == socket.SOCK_DGRAM else "TCP"
        return f"{proto} {self.port} on {self.host} ({self.what}; change {self.setting})"


def require_free_ports(needs: Sequence[PortNeed]) -> None:
    """Check every port before anything starts, and name every busy one in one message.

    Checked up front: a health check would otherwise succeed against whatever already
    listens there, and we would report a system that is not ours. All at once, so that an
    operator fixes everything in one go instead of meeting one busy port per attempt."""
    busy = [need for need in needs if not port_free(need.host, need.port, need.kind)]
    if len(busy) == 1:
        raise LaunchError(f"port in use: {busy[0].describe()}. Stop what runs there or "
                          "choose another port.")
    if busy:
        raise LaunchError(f"{len(busy)} ports in use: "
                          + "; ".join(need.describe() for need in busy)
                          + ". Stop what runs there or choose other ports.")


def system_ports(settings: Settings, dagster_host: str, dagster_port: int, *,
                 http_setting: str = "MANGASYNC_HTTP_PORT",
                 udp_setting: str = "MANGASYNC_UDP_PORT",
                 dagster_setting: str = "--dagster-port") -> list[PortNeed]:
    """The ports `start_system` listens on, each with the setting that moves it."""
    return [
        PortNeed(settings.bind, settings.http_port, "notification server HTTP", http_setting),
        PortNeed(settings.bind, settings.udp_port, "notification server UDP", udp_setting,
                 socket.SOCK_DGRAM),
        PortNeed(dagster_host, dagster_port, "Dagster UI", dagster_setting),
    ]


def start_system(launcher: Launcher, settings: Settings, env: Mapping[str, str], *,
                 dagster_home: Path, dagster_host: str, dagster_port: int,
                 logs: Path | None = None) -> tuple[Running, Running, Endpoints]:
    """Start the notification server, then Dagster; return once both answer.

    The caller checks the ports first (`require_free_ports`), together with its own."""
    server_host = local_address(settings.bind)

    def output(name: str) -> Path | str:
        return logs / f"{name}.log" if logs else "terminal"

    server = launcher.start(Service("server", python_command("server"), env=env,
                                    output=output("server")))
    health = f"http://{server_host}:{settings.http_port}/health"
    launcher.wait_until(server, lambda: http_ok(health), 60, f"answer on {health}")

    home = prepare_dagster_home(dagster_home)
    dagster_env = {**env, "DAGSTER_HOME": str(home)}
    workspace = str(home / "workspace.yaml")

    def dagster(name: str, *argv: str) -> Running:
        return launcher.start(Service(
            name, [sys.executable, "-m", "mangasync_pipeline.ops.dagster_logging", *argv],
            # Started in DAGSTER_HOME: storage paths in its dagster.yaml are relative to it, and
            # Dagster warns of a dagster.yaml in a working directory other than DAGSTER_HOME.
            env=dagster_env, cwd=home, output=output("dagster"),
            # Dagster shuts down cleanly (code servers, run workers' hand-off) on SIGINT.
            stop_signal=signal.SIGINT, stop_timeout=45,
        ))

    # Webserver and daemon as two processes, as production runs them (not `dg dev`): the
    # daemon's logging is then ours to set (ops/dagster_logging.py).
    webserver = dagster("webserver", "dagster-webserver", "--workspace", workspace,
                        "--host", dagster_host, "--port", str(dagster_port))
    ui = f"http://{local_address(dagster_host)}:{dagster_port}"
    launcher.wait_until(webserver, lambda: http_ok(f"{ui}/server_info"), 240,
                        f"Dagster UI on {ui}")
    # The daemon only once the webserver has opened (and, the first time, created) Dagster's
    # storage: two processes setting up one SQLite storage at once can fail on its lock.
    dagster("daemon", "dagster-daemon", "run", "--workspace", workspace)
    return server, webserver, Endpoints(
        dagster_ui=ui,
        server_http=f"http://{server_host}:{settings.http_port}",
        server_udp=f"{server_host}:{settings.udp_port}",
    )
