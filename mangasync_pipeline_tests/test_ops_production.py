"""Production files, checked for what a deployment needs without starting it: the compose file,
the image recipe, the environment template, and Dagster's instance config on a real PostgreSQL.
test_ops_compose_live.py runs the whole stack."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, job, op
from dagster._core.instance.config import dagster_instance_config

from mangasync_pipeline_tests.conftest import PG_ADMIN_DSN, _pg_admin
from mangasync_pipeline_tests.sync_helpers import settings_variables

ROOT = Path(__file__).resolve().parents[1]

# CONTRACTS.md, "Configuration".
CONTRACT_VARIABLES = {
    "DATABASE_URL", "MANGADEX_API_URL", "MANGADEX_UPLOADS_URL", "MANGADEX_API_KEY",
    "MANGADEX_RATE_LIMIT", "MANGASYNC_LANGUAGES", "INITIAL_SYNC_LIMIT",
    "NEW_MANGA_POLL_INTERVAL", "CHAPTER_POLL_INTERVAL", "CHAPTER_BATCH_SIZE", "UDP_SERVER_URL",
    "NOTIFY_TRIGGER_TOKEN", "MANGASYNC_HTTP_PORT", "MANGASYNC_UDP_PORT", "MANGASYNC_BIND",
    "MANGASYNC_PARTITIONS_START",
}
LONG_RUNNING = {"postgres", "code-location", "dagster-webserver", "dagster-daemon", "notify"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_example_variables() -> dict[str, str]:
    """`NAME=value` lines of .env.example, commented (default shown) or not."""
    found: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if m := re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line):
            found.setdefault(m.group(1), m.group(2))
    return found


def test_compose_has_every_service_with_health_and_restart(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= LONG_RUNNING
    for name in LONG_RUNNING:
        service = services[name]
        assert service.get("restart") in ("unless-stopped", "always"), name
        assert service["healthcheck"]["test"], name
    daemons = [n for n, s in services.items() if "dagster-daemon" in str(s.get("command"))]
    assert daemons == ["dagster-daemon"], "exactly one Dagster daemon"


def test_compose_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
    waits = {n: set(s.get("depends_on") or {}) for n, s in services.items()}
    assert "postgres" in waits["migrate"]
    assert "migrate" in waits["code-location"] and "migrate" in waits["notify"]
    assert "code-location" in waits["dagster-webserver"]
    assert "code-location" in waits["dagster-daemon"]
    assert services["code-location"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully")


def test_compose_commands_and_environment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    code = services["code-location"]["command"]
    assert code[:3] == ["dagster", "code-server", "start"]
    assert "mangasync_pipeline.definitions" in code
    # The defs folder is found through the project's pyproject.toml beside the source.
    assert code[code.index("--working-directory") + 1] == "/opt/dagster/app"
    port = code[code.index("--port") + 1]

    workspace = yaml.safe_load((ROOT / "docker" / "workspace.yaml").read_text())
    grpc = workspace["load_from"][0]["grpc_server"]
    assert (grpc["host"], str(grpc["port"])) == ("code-location", port)

    notify = services["notify"]
    assert notify["command"] == ["mangasync", "server"]
    assert notify["environment"]["MANGASYNC_BIND"] == "0.0.0.0"
    assert any(p.endswith(":9091/udp") for p in notify["ports"])
    assert any(p.endswith(":3000") for p in services["dagster-webserver"]["ports"])

    for name in ("migrate", "code-location", "dagster-webserver", "dagster-daemon", "notify"):
        service = services[name]
        assert service["env_file"] == [{"path": ".env", "required": False}], name
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("${DATABASE_URL:-postgresql+psycopg://"), name
        assert "@postgres:5432/" in env["DATABASE_URL"]
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
        assert env["UDP_SERVER_URL"] == "${UDP_SERVER_URL:-http://notify:8085}"

    init = services["postgres"]["volumes"][1].split(":")[0]
    assert (ROOT / init).is_file()


def test_compose_variables_are_documented(compose: dict[str, Any]) -> None:
    documented = env_example_variables()
    text = (ROOT / "docker-compose.yml").read_text()
    for name, has_default in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(:[-?])?", text):
        assert name in documented or has_default, f"${{{name}}} is neither documented nor defaulted"


def test_env_example_lists_every_setting() -> None:
    documented = env_example_variables()
    assert set(documented) >= CONTRACT_VARIABLES, CONTRACT_VARIABLES - set(documented)
    read_by_code = settings_variables()
    assert read_by_code <= set(documented), read_by_code - set(documented)
    dagster_env = set(re.findall(r"\{env: ([A-Z_]+)\}",
                                 (ROOT / "docker" / "dagster.yaml").read_text()))
    assert dagster_env <= set(documented)
    # Each line with a default shows the contract's default.
    assert documented["MANGADEX_RATE_LIMIT"] == "5"
    assert documented["NEW_MANGA_POLL_INTERVAL"] == "5m"
    assert documented["CHAPTER_POLL_INTERVAL"] == "15m"
    assert documented["MANGASYNC_BIND"] == "127.0.0.1"


@pytest.mark.process
def test_the_operators_env_file_is_never_committed_nor_built_in() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, timeout=30)
    assert ignored.returncode == 0, ".env must be in .gitignore"
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_dockerfile_builds_one_image_for_every_service() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install .*\.$", dockerfile, re.M)
    assert "COPY docker/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in dockerfile
    assert "COPY docker/workspace.yaml ./workspace.yaml" in dockerfile
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)


@pytest.fixture
def dagster_pg_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The env vars dagster.yaml reads, pointing at a fresh PostgreSQL database."""
    name = f"mangasync_dagster_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    hostport = PG_ADMIN_DSN.split("@", 1)[1].rsplit("/", 1)[0]
    host, _, port = hostport.partition(":")
    user = PG_ADMIN_DSN.split("://", 1)[1].split("@", 1)[0].split(":")[0]
    monkeypatch.setenv("DAGSTER_POSTGRES_USER", user)
    monkeypatch.setenv("DAGSTER_POSTGRES_PASSWORD", "")
    monkeypatch.setenv("DAGSTER_POSTGRES_HOST", host)
    monkeypatch.setenv("DAGSTER_POSTGRES_PORT", port or "5432")
    monkeypatch.setenv("DAGSTER_POSTGRES_DB", name)
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.database
def test_production_dagster_yaml_passes_dagster_validation(dagster_pg_env: str) -> None:
    config, _ = dagster_instance_config(str(ROOT / "docker"))
    assert config["storage"]["postgres"]["postgres_db"]["db_name"] == {
        "env": "DAGSTER_POSTGRES_DB"}
    assert config["run_retries"] == {"enabled": True, "max_retries": 2,
                                     "retry_on_asset_or_op_failure": False}


@pytest.mark.database
def test_production_instance_runs_on_postgresql(dagster_pg_env: str, tmp_path: Path) -> None:
    shutil.copy(ROOT / "docker" / "dagster.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        # Each run in its own container, whose worker run monitoring can check on; a run
        # that hangs is stopped after the maximum runtime.
        launcher = instance.run_launcher
        assert type(launcher).__name__ == "DockerRunLauncher"
        assert launcher.supports_check_run_worker_health
        assert launcher.networks == ["mangasync"]
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 6 * 3600
        assert instance.run_monitoring_max_resume_run_attempts == 0
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 3
        assert concurrency.run_queue_config is not None
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        # The pool MangaDex steps use gets the default limit from PostgreSQL-backed storage.
        assert instance.event_log_storage.get_concurrency_info("mangadex").limit == 3

        # A run is recorded and read back: writing its events is where dagster-postgres sent
        # a parameterised NOTIFY that PostgreSQL refuses, when `postgresql://` meant psycopg 3.
        result = _probe_job.execute_in_process(instance=instance)
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.is_success
        assert instance.event_log_storage.get_maximum_record_id()


@op
def _probe() -> int:
    return 1


@job
def _probe_job() -> None:
    _probe()


@pytest.mark.database
def test_embedded_dagster_yaml_is_valid_and_uses_sqlite(tmp_path: Path) -> None:
    template = ROOT / "mangasync_pipeline" / "ops" / "dagster_home.yaml"
    shutil.copy(template, tmp_path / "dagster.yaml")
    dagster_instance_config(str(tmp_path))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert "Sqlite" in type(instance.run_storage).__name__
        assert instance.run_retries_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2


def test_local_workspace_loads_the_definitions_module() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]
    assert module["module_name"] == "mangasync_pipeline.definitions"
    assert module["attribute"] == "defs"


@pytest.mark.process
def test_health_checks_fail_in_one_line_when_dagster_storage_is_unreachable(
        tmp_path: Path) -> None:
    """docker-compose.yml's checks: a storage that cannot be read is unhealthy."""
    import sys

    from mangasync_pipeline.ops.system import free_port

    shutil.copy(ROOT / "docker" / "dagster.yaml", tmp_path / "dagster.yaml")
    closed = free_port()  # nothing listens there
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "DAGSTER_POSTGRES_USER": "mangasync",
           "DAGSTER_POSTGRES_PASSWORD": "x", "DAGSTER_POSTGRES_HOST": "127.0.0.1",
           "DAGSTER_POSTGRES_PORT": str(closed), "DAGSTER_POSTGRES_DB": "dagster"}
    for check, args in (("daemon", []), ("webserver", [f"http://127.0.0.1:{closed}"])):
        result = subprocess.run([sys.executable, "-m", "mangasync_pipeline.ops.health", check,
                                 *args], env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 1, (check, result.stdout, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("unhealthy: "), line
        assert ("Dagster storage unreadable" if check == "daemon" else "front page") in line


@pytest.mark.process
def test_migrate_says_in_one_line_why_the_database_cannot_be_reached(tmp_path: Path) -> None:
    """What `docker compose logs migrate` shows when `up` stops on a failed migration."""
    import sys

    from mangasync_pipeline.ops.system import free_port

    url = f"postgresql+psycopg://mangasync:secret@127.0.0.1:{free_port()}/mangahub"
    result = subprocess.run([sys.executable, "-m", "mangasync_pipeline.cli", "migrate"],
                            env={**os.environ, "DATABASE_URL": url}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "cannot reach" in line and "refused" in line.lower(), line
    assert "secret" not in line
