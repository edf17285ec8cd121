"""The deployment files, read as Docker, Dagster and Kubernetes will read them.

Without a Docker engine: docker-compose.yml, the Helm values and the Kubernetes manifests load,
every command names an installed program and a real module, every variable is set or
defaulted, volumes and networks are declared, and the run launcher's image, network, volume
and environment match the compose services. test_ops_compose_live.py runs the stack itself.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mangasync_pipeline.cli import cli
from mangasync_pipeline_tests.sync_helpers import settings_variables

ROOT = Path(__file__).resolve().parents[1]
MANGASYNC_SERVICES = ("migrate", "code-location", "dagster-webserver", "dagster-daemon",
                      "notify")
DAGSTER_SERVICES = ("code-location", "dagster-webserver", "dagster-daemon")


def load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    return load("docker/dagster.yaml")["run_launcher"]


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return load("deploy/helm/values.yaml")


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ROOT / "deploy/kubernetes/mangasync.yaml").read_text()))


def settings_read_by_code() -> set[str]:
    return settings_variables()


def settings_read_by_dagster() -> set[str]:
    return set(re.findall(r"\{env: ([A-Z_]+)\}", (ROOT / "docker" / "dagster.yaml").read_text()))


def required_in_env_example() -> set[str]:
    """Variables .env.example sets on an uncommented line: what `cp .env.example .env` gives."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=\S", text, re.M))


def console_scripts() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}


def assert_real_command(argv: list[str], where: str) -> None:
    """The program is installed by our dependencies, a `mangasync` subcommand exists, and a
    `--module-name`, `-m` module or `-c` code is real."""
    program = argv[0]
    if program == "python":
        assert argv[1] in ("-c", "-m"), where
        if argv[1] == "-m":
            assert importlib.util.find_spec(argv[2]), f"{where}: no module {argv[2]}"
        else:
            compile(argv[2], where, "exec")
        return
    assert program in console_scripts(), f"{where}: {program} is not an installed program"
    if program == "mangasync":
        assert argv[1] in cli.list_commands(None), f"{where}: no `mangasync {argv[1]}`"  # type: ignore[arg-type]
    if "--module-name" in argv:
        module = argv[argv.index("--module-name") + 1]
        assert importlib.util.find_spec(module), f"{where}: no module {module}"
        if "--attribute" in argv:
            attribute = argv[argv.index("--attribute") + 1]
            assert hasattr(importlib.import_module(module), attribute), where


def test_every_command_names_a_real_program_and_module(compose: dict[str, Any]) -> None:
    for name in MANGASYNC_SERVICES:
        service = compose["services"][name]
        assert_real_command(service["command"], f"{name} command")
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            assert test[0] == "CMD", name
            assert_real_command(test[1:], f"{name} health check")


def test_every_variable_is_set_or_defaulted(compose: dict[str, Any]) -> None:
    needed = settings_read_by_code() | settings_read_by_dagster()
    required = required_in_env_example()
    for name in MANGASYNC_SERVICES:
        env = compose["services"][name]["environment"]
        missing = needed - set(env)
        assert not missing, f"{name} does not set {sorted(missing)}"
    text = (ROOT / "docker-compose.yml").read_text()
    for variable, default in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(:[-?])?", text):
        # `${X:?}` and bare `${X}` stop `docker compose up` unless .env sets X.
        if default != ":-":
            assert variable in required, f"${{{variable}}} must be set in .env.example"


def test_volumes_and_networks_are_declared(compose: dict[str, Any]) -> None:
    volumes, networks = compose["volumes"], compose["networks"]
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} is not in the repository"
            elif source.startswith("/"):
                assert source == "/var/run/docker.sock", f"{name} mounts the host's {source}"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"
        assert set(service.get("networks", [])) <= set(networks), name
        assert service.get("networks"), f"{name} is on no declared network"


def test_run_launcher_matches_the_compose_services(compose: dict[str, Any],
                                                   launcher: dict[str, Any]) -> None:
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    config = launcher["config"]
    services = compose["services"]

    # The network each run's container joins is the one the services are on, by its real name.
    by_name = {spec["name"]: key for key, spec in compose["networks"].items()}
    network = by_name[config["network"]]
    for name in compose["services"]:
        assert network in services[name]["networks"], f"{name} is not on {config['network']}"

    # The image of each run is the one the code location reports, which is the services' image.
    code = services["code-location"]
    assert code["environment"]["DAGSTER_CURRENT_IMAGE"] == code["image"]
    assert {services[n]["image"] for n in MANGASYNC_SERVICES} == {code["image"]}

    # Each run gets every setting, and the daemon that starts runs has each one to give.
    passed = set(config["env_vars"])
    needed = settings_read_by_code() | settings_read_by_dagster()
    assert needed <= passed, f"runs would lack {sorted(needed - passed)}"
    for name in ("dagster-daemon", "dagster-webserver"):
        assert passed <= set(services[name]["environment"]), name

    # Compute logs go to the volume the webserver reads.
    volume_names = {spec["name"]: key for key, spec in compose["volumes"].items()
                    if spec and "name" in spec}
    for mount in config["container_kwargs"]["volumes"]:
        source, target = mount.split(":")[:2]
        assert f"{volume_names[source]}:{target}" in services["dagster-webserver"]["volumes"]

    # The daemon and webserver reach the engine, with the socket's group.
    for name in ("dagster-daemon", "dagster-webserver"):
        assert "/var/run/docker.sock:/var/run/docker.sock" in services[name]["volumes"]
        assert services[name]["group_add"] == ["${DOCKER_GID:-999}"]


def test_helm_values_run_the_project_image_with_k8s_runs_and_outside_postgres(
        helm: dict[str, Any], manifests: list[dict[str, Any]]) -> None:
    assert helm["postgresql"]["enabled"] is False
    assert helm["postgresql"]["postgresqlHost"]
    assert helm["generatePostgresqlPasswordSecret"] is False
    assert helm["global"]["postgresqlSecretName"]

    user = helm["dagster-user-deployments"]
    assert user["enabled"] and user["enableSubchart"]
    [deployment] = user["deployments"]
    assert_real_command(["dagster", "code-server", "start", *deployment["codeServerArgs"]],
                        "user deployment")
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True

    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    k8s = helm["runLauncher"]["config"]["k8sRunLauncher"]
    assert k8s["envConfigMaps"] == deployment["envConfigMaps"]
    assert k8s["envSecrets"] == deployment["envSecrets"]

    # The same production policy as dagster.yaml.
    instance = load("docker/dagster.yaml")
    daemon = helm["dagsterDaemon"]
    assert daemon["runMonitoring"]["enabled"] is True
    assert daemon["runMonitoring"]["maxResumeRunAttempts"] == (
        instance["run_monitoring"]["max_resume_run_attempts"])
    assert k8s["runK8sConfig"]["jobSpecConfig"]["activeDeadlineSeconds"] == (
        instance["run_monitoring"]["max_runtime_seconds"])
    assert daemon["runRetries"] == {
        "enabled": True, "maxRetries": instance["run_retries"]["max_retries"],
        "retryOnAssetOrOpFailure": instance["run_retries"]["retry_on_asset_or_op_failure"]}
    runs = helm["concurrency"]["runs"]
    assert runs["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == (
        instance["concurrency"]["runs"]["tag_concurrency_limits"])
    assert helm["concurrency"]["pools"]["defaultLimit"] == (
        instance["concurrency"]["pools"]["default_limit"])

    # The notification servers, migration and settings beside the chart: same image, same
    # settings, real commands, and only settings the code reads.
    kinds = {m["kind"]: m for m in manifests}
    config_map = kinds["ConfigMap"]
    assert [{"name": config_map["metadata"]["name"]}] == deployment["envConfigMaps"]
    assert set(config_map["data"]) <= settings_read_by_code(), "a setting the code never reads"
    assert config_map["data"]["NOTIFY_SERVER_URL"].startswith("http://mangasync-notify:")
    service_names = {m["metadata"]["name"] for m in manifests if m["kind"] == "Service"}
    assert "mangasync-notify" in service_names
    for kind in ("Job", "Deployment"):
        [container] = kinds[kind]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image, kind
        assert_real_command(container["command"], kind)
        sources = container["envFrom"]
        assert {"configMapRef": {"name": config_map["metadata"]["name"]}} in sources
        assert {"secretRef": deployment["envSecrets"][0]} in sources
    assert kinds["Deployment"]["spec"]["replicas"] >= 2, "servers scale out on one database"
