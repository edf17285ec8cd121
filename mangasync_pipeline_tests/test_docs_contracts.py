"""The docs that other programs rely on cannot drift from the code: every setting `Settings`
reads is documented, every command is in the command table, and every run-config example
is one its job accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from dagster import validate_run_config

from mangasync_pipeline.cli import cli
from mangasync_pipeline.config import Settings
from mangasync_pipeline.definitions import defs
from mangasync_pipeline_tests.sync_helpers import settings_variables

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = (ROOT / "docs" / "CONTRACTS.md").read_text()
README = (ROOT / "README.md").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()


def table_names(text: str, heading: str) -> set[str]:
    """Backquoted names in the first column of the table under `heading`."""
    match = re.search(rf"^#+ {re.escape(heading)}.*?\n(.*?)(?=^#)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    rows = [line.split("|")[1] for line in match.group(1).splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row)}


@pytest.mark.parametrize(("page", "heading"), [
    (CONTRACTS, "Configuration (environment variables)"),
    (README, "Configuration"),
])
def test_every_setting_is_in_the_configuration_tables(page: str, heading: str) -> None:
    missing = settings_variables() - table_names(page, heading)
    assert not missing, f"settings missing from the {heading!r} table: {sorted(missing)}"


def test_every_setting_is_in_env_example() -> None:
    listed = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, re.M))
    missing = settings_variables() - listed
    assert not missing, f"settings missing from .env.example: {sorted(missing)}"


def test_every_command_is_in_the_command_table() -> None:
    documented = {name.split()[1] for name in table_names(CONTRACTS, "Command line")
                  if name.startswith("mangasync ")}
    commands = set(cli.list_commands(click.Context(cli)))
    assert commands - documented == set(), "commands missing from CONTRACTS.md"
    assert documented - commands == set(), "CONTRACTS.md documents commands mangasync lacks"


def run_config_examples() -> list[tuple[str, dict[str, object]]]:
    """(job, run config) for every table row of the docs that names a job and gives a JSON
    run config in backquotes."""
    found = []
    for page in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for line in page.read_text().splitlines():
            jobs = re.findall(r"`(\w+_job)`", line)
            for example in re.findall(r"`(\{.*?\})`(?!\w)", line):
                if '"ops"' in example or "mangadex_id" in example:
                    assert len(jobs) == 1, f"{page.name}: which job is this for? {line}"
                    found.append((jobs[0], json.loads(example)))
    return found


@pytest.mark.database
def test_every_run_config_example_validates_against_its_job() -> None:
    examples = run_config_examples()
    assert {job for job, _ in examples} >= {"sync_manga_job"}
    for job_name, run_config in examples:
        job = defs().resolve_job_def(job_name)
        result = validate_run_config(job, run_config)
        assert result, f"{job_name}: {run_config}"


def test_the_notify_server_url_has_a_clearer_name_and_the_old_one_still_works() -> None:
    old = Settings.from_env({"UDP_SERVER_URL": "http://notify:8085"})
    new = Settings.from_env({"NOTIFY_SERVER_URL": "http://notify:8085"})
    assert old.udp_server_url == new.udp_server_url == "http://notify:8085"
    both = Settings.from_env({"NOTIFY_SERVER_URL": "http://a:1", "UDP_SERVER_URL": "http://b:2"})
    assert both.udp_server_url == "http://a:1"
