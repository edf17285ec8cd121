"""Data flows one way (MangaDex, client, database and outbox, notifier, server, UDP): a module
never imports a package above its own layer, not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mangasync_pipeline

ROOT = Path(mangasync_pipeline.__file__).parent

# package -> the packages of mangasync_pipeline it must never import
FORBIDDEN = {
    "notify": {"sync", "defs", "ops"},  # the server, not the pipeline
    "mangadex": {"sync", "defs", "notify", "ops"},
    # Plain-Python sync logic: no Dagster wrapper, no server, no process management.
    "sync": {"defs", "notify", "ops", "cli", "definitions"},
    "db": {"mangadex", "sync", "defs", "notify", "ops", "cli", "definitions"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(second-level package of mangasync_pipeline, line) for every import in the file."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mangasync_pipeline" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def violations(package: str) -> list[str]:
    return sorted(f"{path.relative_to(ROOT.parent)}:{line} imports mangasync_pipeline.{target}"
                  for path in (ROOT / package).rglob("*.py")
                  for target, line in imported_packages(path)
                  if target in FORBIDDEN[package])


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mangasync_pipeline.sync.manga_sync import sync_one\n")
    assert ("sync", 2) in imported_packages(module)
