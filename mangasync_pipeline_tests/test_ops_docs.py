"""What a newcomer reads and runs first: the README's set-up, its demo options, its links, and
what `scripts/test.sh` does about the browser the browser test needs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from mangasync_pipeline.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The text of a `## title` section of the README, up to the next heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^#{{1,2}} )", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def test_setup_is_exactly_the_two_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", section("Set-up"), re.S)
    assert len(blocks) == 1
    commands = [line.split("#", 1)[0].strip() for line in blocks[0].splitlines()]
    assert [c for c in commands if c] == ["bash scripts/run.sh", "bash scripts/test.sh"]


def test_readme_documents_every_demo_option() -> None:
    help_text = CliRunner().invoke(cli, ["demo", "--help"]).output
    options = set(re.findall(r"^\s+(--[a-z][a-z-]*)", help_text, re.M)) - {"--help"}
    assert len(options) >= 11, help_text
    demo = section("Demo")
    documented = set(re.findall(r"`(--[a-z][a-z-]*)", demo))
    assert options - documented == set(), "options missing from the README's Demo section"
    assert documented - options == set(), "the README documents options the demo lacks"


def test_readme_and_docs_name_only_files_in_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
            assert path.exists(), f"{page.name} links to a missing file: {target}"
        assert "../shared" not in text and "shared PROTOCOL" not in text, page.name
    for contract in ("docs/PROTOCOL.md", "docs/NOTIFICATION-RULES.md", "docs/CONTRACTS.md"):
        assert f"]({contract})" in README, f"README does not link {contract}"


def run_test_sh(tmp_path: Path, uid: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    """scripts/test.sh as user `uid` would run it, on a machine without Chromium.

    Only `id` and `apt-get` are stand-ins (the second records its arguments instead of
    installing); pytest is asked only for its version, so no test runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-get.calls"
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "MANGASYNC_CHROMIUM": str(tmp_path / "no-chromium"), "MANGASYNC_TEST_WORKERS": "0"}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test.sh"), "--version"], env=env, capture_output=True,
        text=True, timeout=300)
    return result, calls


@pytest.mark.process
def test_test_sh_without_root_says_what_to_install(tmp_path: Path) -> None:
    result, calls = run_test_sh(tmp_path, uid=1000)
    assert result.returncode == 0, result.stderr
    told = [line for line in result.stderr.splitlines() if "chromium" in line.lower()]
    assert told == ["test.sh: the browser test needs Debian's Chromium: "
                    "sudo apt-get install -y chromium"]
    assert not calls.exists(), "without root, test.sh must not try to install anything"


@pytest.mark.process
def test_test_sh_as_root_installs_chromium_from_debian(tmp_path: Path) -> None:
    result, calls = run_test_sh(tmp_path, uid=0)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == "update -qq"
    assert lines[1] == "install -y -qq chromium"
