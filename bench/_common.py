"""Shared parts of the sync benchmarks: throwaway databases, a simulator process, tables."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from mangasync_pipeline.db.migrate import upgrade
from mangasync_pipeline.ops.system import free_port

PG_ADMIN_DSN = os.environ.get("MANGASYNC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")


def command() -> str:
    """The command line that produced this output, as a reader would type it."""
    script = os.path.relpath(sys.argv[0])
    return " ".join([".venv/bin/python", script, *(shlex.quote(a) for a in sys.argv[1:])])


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """An empty PostgreSQL database on the bench server, dropped afterwards; yields its name."""
    name = f"mangasync_bench_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(name: str, driver: str = "psycopg") -> str:
    """The SQLAlchemy URL of database `name` on the bench server."""
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].split("://", 1)[1]
    return f"postgresql+{driver}://{base}/{name}"


@contextmanager
def throwaway_db(backend: str, tmp: Path) -> Iterator[str]:
    """A freshly migrated MangaHub database, dropped (PostgreSQL) or left in `tmp` (SQLite)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'mangahub-{uuid.uuid4().hex[:8]}.sqlite'}"
        upgrade(url)
        yield url
        return
    with throwaway_pg_database() as name:
        url = pg_url(name)
        upgrade(url)
        yield url


@contextmanager
def simulator_process(*, rate_limit: float | None, manga: int = 10, seed: int = 1,
                      chapters_per_manga: float = 0.0) -> Iterator[str]:
    """The simulator in its own process, so its rendering runs on the other core and its
    cost does not count as ours."""
    port = free_port()
    code = ("from mangasync_pipeline.mangadex.simulator.cli import fake_mangadex; "
            "fake_mangadex()")
    args = [sys.executable, "-c", code, "--port", str(port), "--seed", str(seed),
            "--manga", str(manga), "--rate-limit", str(rate_limit or 0),
            "--chapters-per-manga", str(chapters_per_manga)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"simulator exited at start: {err.strip()[-300:]}")
            try:
                if httpx.get(f"{url}/_sim/stats", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("simulator did not answer within 120 s")
            time.sleep(0.1)
        yield url
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate a child, and kill it if it does not go within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1) of `values`, which must not be empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def minutes(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min"
