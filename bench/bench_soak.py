"""Soak: the whole local stack on PostgreSQL for an hour, at MangaDex's chapter traffic, with
100 readers going on and off line.

    .venv/bin/python bench/bench_soak.py [--minutes 60] [--readers 100] [--json FILE]

The stack is started as an operator starts it, by the project's launcher (`ops/launcher.py`,
`ops/system.py::start_system`): the MangaDex simulator at 5 requests/s, `mangasync server`,
and Dagster's webserver and daemon (each with its code server; a run worker per run) with every
schedule and sensor at its shipped setting. Dagster's instance is the packaged
`ops/dagster_home.yaml` with its storage in a PostgreSQL database of its own; MangaHub's
database is PostgreSQL too. `initial_sync_job` imports the catalogue first.

Traffic (a Poisson process each): `--chapters-per-hour` new English chapters on catalogued
manga, each the next label of its manga, of which `--second-group` are a second group's upload
of a label just released (no second announcement is due), and `--manga-per-hour` new manga.
The readers are `notify/client.py::NotificationClient`s, each from its own loopback address,
each following `--follows` catalogued manga; each goes on line for a random (exponential)
time, then off line, half of the time with UNREGISTER and half by falling silent, and comes
back on a new port. At the end the traffic stops, the pipeline gets `--drain` seconds to
announce what it owes, every reader comes back on line for its catch-up, and then:

- missed: a chapter or manga due to a reader (by the rules of NOTIFICATION-RULES.md) with no
  notification for that reader in the database, or a notification the database holds for a
  reader that the reader never received;
- duplicated: two notifications for the same chapter or manga to one reader, or one
  notification received again in a later on-line period (a reader restarted would show it
  twice); repeated datagrams within a session (at-least-once delivery, dropped by id) are
  counted apart;
- latency from a chapter's appearance in the simulator to its receipt, for readers on line
  throughout, and apart the time from coming back on line to receipt for the others;
- RSS of every process of the stack sampled from /proc, and its slope (least squares);
- Dagster's PostgreSQL storage before and after the traffic, per 1,000 chapters stored, then
  after `prune_runs_job` (`dg launch`) with `MANGASYNC_RUN_RETENTION=--retention`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import psycopg
from _common import (
    PG_ADMIN_DSN,
    command,
    free_port,
    percentile,
    pg_url,
    table,
    throwaway_db,
    throwaway_pg_database,
)
from bench_chapters import wait_until
from sqlalchemy import Engine, func, select

from mangasync_pipeline.config import Settings
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.mangadex.simulator import SimulatorAdmin
from mangasync_pipeline.notify.client import AuthFailed, NotificationClient
from mangasync_pipeline.notify.users import add_user, library_add
from mangasync_pipeline.ops.launcher import (
    Launcher,
    Service,
    http_ok,
    python_command,
    stop_on_signals,
    venv_script,
)
from mangasync_pipeline.ops.system import DEFINITIONS_MODULE, start_system

RATE = 5.0
MB = 1024 * 1024


def say(line: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} soak: {line}", flush=True)


# --- Dagster's instance on PostgreSQL -------------------------------------------------------

def dagster_home(tmp: Path, db_name: str) -> Path:
    """DAGSTER_HOME holding the packaged local config with its storage moved to PostgreSQL
    (what an operator edits in dagster.yaml; `prepare_dagster_home` keeps an existing one)."""
    home = tmp / "dagster_home"
    home.mkdir()
    user, host_port = PG_ADMIN_DSN.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)
    user, _, password = user.partition(":")
    host, _, port = host_port.partition(":")
    storage = "\n".join([
        "storage:", "  postgres:", "    postgres_db:",
        "      scheme: postgresql+psycopg2", f"      username: {user}",
        f"      password: '{password}'", f"      hostname: {host}",
        f"      db_name: {db_name}", f"      port: {port or 5432}", "", ""])
    packaged = (files("mangasync_pipeline.ops") / "dagster_home.yaml").read_text()
    (home / "dagster.yaml").write_text(storage + packaged)
    return home


def storage(db_name: str) -> dict[str, Any]:
    """Size of Dagster's database and of each table (with indexes and TOAST), and row counts
    of what grows with the traffic."""
    with psycopg.connect(pg_url(db_name).replace("postgresql+psycopg", "postgresql"),
                         autocommit=True) as conn:
        total = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        tables = dict(conn.execute(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_catalog.pg_statio_user_tables"
        ).fetchall())
        rows = {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]  # noqa: S608
                for name in ("runs", "event_logs", "asset_check_executions", "job_ticks")
                if name in tables}
        statuses = {}
        for name in ("runs", "job_ticks"):
            try:
                statuses[name] = dict(conn.execute(
                    f"SELECT status, count(*) FROM {name} GROUP BY status").fetchall())  # noqa: S608
            except psycopg.Error as exc:
                statuses[name] = {"error": str(exc).splitlines()[0]}
    return {"database_bytes": int(total), "tables": {k: int(v) for k, v in tables.items()},
            "rows": rows, "statuses": statuses}


def vacuum_full(db_name: str) -> None:
    with psycopg.connect(pg_url(db_name).replace("postgresql+psycopg", "postgresql"),
                         autocommit=True) as conn:
        conn.execute("VACUUM FULL")


# --- memory of every process of the stack ---------------------------------------------------

ROLES = [  # first match wins: run workers before the code server they are started by
    # Dagster's default launcher runs each run in a multiprocessing child of the code server.
    (re.compile(r"execute_run|api execute|multiprocessing.spawn|multiprocessing-fork"),
     "run worker"),
    (re.compile(r"resource_tracker"), "multiprocessing resource tracker"),
    (re.compile(r"code-server start"), "code server proxy"),
    (re.compile(r"dagster-daemon|_daemon\b|\bdaemon run"), "dagster daemon"),
    (re.compile(r"webserver"), "dagster webserver"),
    (re.compile(r"grpc"), "code server"),
    (re.compile(r"\bdg\b.* dev"), "dg dev"),
    (re.compile(r"fake-mangadex"), "simulator"),
    (re.compile(r"cli server"), "notification server"),
]


def role(cmdline: str, service: str) -> str:
    for pattern, name in ROLES:
        if pattern.search(cmdline):
            return name
    return f"{service}: {' '.join(Path(a).name for a in cmdline.split()[:3])}"


def session_processes(sid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


@dataclass
class Memory:
    """RSS samples per process (pid, role), with the time of each in seconds."""

    samples: dict[tuple[int, str], list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list))
    commands: dict[int, str] = field(default_factory=dict)

    def sample(self, launcher: Launcher, started: float) -> None:
        now = time.monotonic() - started
        groups = [(r.service.name, r.pid) for r in launcher.running]
        groups.append(("bench", os.getpid()))
        for service, sid in groups:
            pids = [sid] if service == "bench" else session_processes(sid)
            for pid in pids:
                mb = rss_mb(pid)
                if mb is not None:
                    name = "bench (100 readers)" if service == "bench" else role(
                        cmdline(pid), service)
                    self.samples[(pid, name)].append((now, mb))
                    self.commands.setdefault(pid, cmdline(pid)[:200])

    def total(self) -> float:
        """RSS of the processes alive at the last sample (exited run workers left out)."""
        last = max((points[-1][0] for points in self.samples.values() if points), default=0.0)
        return sum(points[-1][1] for points in self.samples.values()
                   if points and points[-1][0] == last)

    def report(self, soak_from: float, soak_to: float) -> list[dict[str, Any]]:
        """Long-lived processes: slope over the soak; short-lived ones (run workers): peak."""
        rows: list[dict[str, Any]] = []
        workers = [p for (pid, name), p in self.samples.items() if name == "run worker"]
        for (pid, name), points in sorted(self.samples.items(), key=lambda kv: kv[0][1]):
            if name == "run worker":
                continue
            inside = [(s, mb) for s, mb in points if soak_from <= s <= soak_to]
            if len(inside) < 3 or inside[-1][0] - inside[0][0] < (soak_to - soak_from) / 2:
                continue
            rows.append({"process": name, "pid": pid, "start_mb": round(inside[0][1], 1),
                         "end_mb": round(inside[-1][1], 1),
                         "max_mb": round(max(mb for _, mb in inside), 1),
                         "slope_mb_per_hour": round(slope(inside) * 3600, 2),
                         "samples": len(inside), "command": self.commands.get(pid)})
        if workers:
            rows.append({"process": "run worker", "pid": None, "count": len(workers),
                         "max_mb": round(max(mb for p in workers for _, mb in p), 1),
                         "median_peak_mb": round(statistics.median(
                             max(mb for _, mb in p) for p in workers), 1)})
        return rows


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


# --- readers --------------------------------------------------------------------------------

@dataclass
class Receipt:
    at: float  # wall clock
    online_since: float  # when the on-line period that received it began
    msg: dict[str, Any]


@dataclass
class Reader:
    index: int
    user: str
    user_id: int
    token: str
    follows: set[int]  # local manga ids
    received: dict[int, Receipt] = field(default_factory=dict)
    again_later: list[int] = field(default_factory=list)  # ids received in two on-line periods
    repeated_datagrams: int = 0
    periods: list[tuple[float, float | None]] = field(default_factory=list)
    online: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"127.0.{2 + self.index // 250}.{2 + self.index % 250}"


class Readers:
    def __init__(self, readers: list[Reader], udp: tuple[str, int], online_mean: float,
                 offline_mean: float, seed: int) -> None:
        self.readers = readers
        self.udp = udp
        self.online_mean = online_mean
        self.offline_mean = offline_mean
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.final = threading.Event()  # everybody on line now, until stop
        self.threads = [threading.Thread(target=self._run, args=(r, random.Random(seed + i)),
                                         name=f"reader-{i}", daemon=True)
                        for i, r in enumerate(readers)]
        self.lock = threading.Lock()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def online(self) -> int:
        return sum(r.online for r in self.readers)

    def _run(self, reader: Reader, rng: random.Random) -> None:
        # Readers start spread over the first seconds, a third of them off line.
        if rng.random() < 1 / 3 and self.stop.wait(rng.expovariate(1 / self.offline_mean)):
            return
        while not self.stop.is_set():
            until = time.monotonic() + rng.expovariate(1 / self.online_mean)
            self._session(reader, until, clean=rng.random() < 0.5)
            if self.stop.is_set() or self.final.is_set():
                continue
            off_until = time.monotonic() + rng.expovariate(1 / self.offline_mean)
            while time.monotonic() < off_until and not self.final.is_set():
                if self.stop.wait(0.5):
                    return

    def _session(self, reader: Reader, until: float, clean: bool) -> None:
        since = time.time()
        client = NotificationClient(self.udp[0], self.udp[1], reader.user, reader.token,
                                    source=reader.source)
        reader.online = True
        reader.periods.append((since, None))

        def got(msg: dict[str, Any]) -> None:
            nid = int(msg["id"])
            with self.lock:
                if nid in reader.received:
                    if reader.received[nid].online_since != since:
                        reader.again_later.append(nid)
                else:
                    reader.received[nid] = Receipt(time.time(), since, msg)

        def sweep() -> None:  # notifications handled while registering have no callback
            for msg in client.received:
                if int(msg["id"]) not in reader.received:
                    got(msg)

        try:
            try:
                client.register()
            except (TimeoutError, AuthFailed) as exc:
                reader.errors.append(f"{datetime.now(UTC):%H:%M:%S} {exc}")
            sweep()
            while not self.stop.is_set() and (time.monotonic() < until or self.final.is_set()):
                client.poll(0.5, on_notification=got)
                sweep()
            if clean:
                client.unregister()
        except OSError as exc:
            reader.errors.append(f"{datetime.now(UTC):%H:%M:%S} {exc}")
        finally:
            reader.repeated_datagrams += client.duplicates
            client.close()
            reader.online = False
            reader.periods[-1] = (since, time.time())


def make_readers(engine: Engine, count: int, catalogued: list[int], follows: int,
                 rng: random.Random) -> list[Reader]:
    readers = []
    with engine.connect() as conn:
        mdx = dict(conn.execute(select(t.manga.c.id, t.manga.c.mangadex_id)).all())
    for i in range(count):
        name = f"soak-reader-{i:03d}"
        user_id, token = add_user(engine, name)
        chosen = set(rng.sample(catalogued, min(follows, len(catalogued))))
        for manga_id in chosen:
            library_add(engine, name, mdx[manga_id])
        readers.append(Reader(i, name, user_id, token, chosen))
    return readers


# --- traffic --------------------------------------------------------------------------------

@dataclass
class Published:
    kind: str  # "chapter", "second group" or "manga"
    mangadex_manga: str
    at: float  # wall clock, just before the simulator had it
    label: str | None = None
    chapter_ids: list[str] = field(default_factory=list)


def top_label(chapters: list[dict[str, Any]]) -> int:
    best = Decimal(0)
    for c in chapters:
        attrs = c.get("attributes", c)
        if attrs.get("translatedLanguage", attrs.get("language")) != "en":
            continue
        try:
            best = max(best, Decimal(str(attrs.get("chapter"))))
        except InvalidOperation:
            continue
    return int(best)


class Traffic:
    def __init__(self, admin: SimulatorAdmin, catalogued_mdx: list[str], chapters_per_hour: float,
                 manga_per_hour: float, second_group: float, seed: int) -> None:
        self.admin = admin
        self.rng = random.Random(seed)
        self.catalogued = catalogued_mdx
        self.next_label = {mid: top_label(admin.get_manga(mid)["chapters"]) + 1
                           for mid in catalogued_mdx}
        self.chapter_rate = chapters_per_hour / 3600
        self.manga_rate = manga_per_hour / 3600
        self.second_group = second_group
        self.published: list[Published] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        total = self.chapter_rate + self.manga_rate
        recent: list[Published] = []
        while not self.stop.wait(self.rng.expovariate(total)):
            try:
                if self.rng.random() < self.manga_rate / total:
                    self.published.append(self._manga())
                elif recent and self.rng.random() < self.second_group:
                    self.published.append(self._chapter(self.rng.choice(recent[-10:])))
                else:
                    made = self._chapter(None)
                    recent.append(made)
                    self.published.append(made)
            except Exception as exc:  # the soak goes on; the report shows it
                self.errors.append(f"{datetime.now(UTC):%H:%M:%S} {exc}")

    def _chapter(self, again: Published | None) -> Published:
        if again is None:
            mid = self.rng.choice(self.catalogued)
            label = str(self.next_label[mid])
            self.next_label[mid] += 1
            group, kind = "Soak Scans", "chapter"
        else:
            mid, label, group, kind = (again.mangadex_manga, again.label, "Second Soak Scans",
                                       "second group")
        at = time.time()
        ids = self.admin.add_chapters([{"manga": mid, "chapter": label, "language": "en",
                                        "group": group}])
        return Published(kind, mid, at, label, ids)

    def _manga(self) -> Published:
        at = time.time()
        title = f"Soak Manga {len(self.published)} {secrets.token_hex(3)}"
        made = self.admin.add_manga(title=title, contentRating="safe", status="ongoing")
        return Published("manga", made["ids"][0], at)


# --- what the database says -----------------------------------------------------------------

def notifications_by_user(engine: Engine, since_id: int) -> dict[int, list[Any]]:
    n = t.notifications
    with engine.connect() as conn:
        rows = conn.execute(select(n.c.id, n.c.user_id, n.c.type, n.c.manga_id, n.c.label,
                                   n.c.chapter, n.c.created_at)
                            .where(n.c.id > since_id).order_by(n.c.id)).all()
    out: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        out[int(row.user_id)].append(row)
    return out


def local_ids(engine: Engine, mangadex_ids: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {mdx: int(i) for i, mdx in conn.execute(
            select(t.manga.c.id, t.manga.c.mangadex_id)
            .where(t.manga.c.mangadex_id.in_(mangadex_ids))).all()}


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def due(published: list[Published], ids: dict[str, int], readers: list[Reader]
        ) -> dict[int, set[tuple[str, int, str | None]]]:
    """What each reader is owed: every new manga, and the first upload of each new label of
    the manga they follow (keys: type, local manga id, label)."""
    owed: dict[int, set[tuple[str, int, str | None]]] = {r.user_id: set() for r in readers}
    for p in published:
        local = ids.get(p.mangadex_manga)
        for r in readers:
            if p.kind == "manga":  # one never catalogued is owed all the same
                owed[r.user_id].add(("NEW_MANGA", local, None) if local is not None
                                    else ("NEW_MANGA", 0, p.mangadex_manga))
            elif p.kind == "chapter" and local in r.follows:
                owed[r.user_id].add(("NEW_CHAPTER", local, p.label))
    return owed


def key_of(row: Any) -> tuple[str, int, str | None]:
    return (str(row.type), int(row.manga_id), row.label if row.type == "NEW_CHAPTER" else None)


# --- the run --------------------------------------------------------------------------------

def stack_env(tmp: Path, db: str, home: Path, ports: dict[str, int], retention: str,
              initial_sync: int) -> dict[str, str]:
    """The operator's environment: the shipped defaults, but for where things are."""
    return {**os.environ,
            "DATABASE_URL": db,
            "MANGADEX_API_URL": f"http://127.0.0.1:{ports['mangadex']}",
            "MANGADEX_RATE_LIMIT": str(RATE),
            "INITIAL_SYNC_LIMIT": str(initial_sync),
            "NOTIFY_SERVER_URL": f"http://127.0.0.1:{ports['http']}",
            "MANGASYNC_HTTP_PORT": str(ports["http"]),
            "MANGASYNC_UDP_PORT": str(ports["udp"]),
            "MANGASYNC_BIND": "127.0.0.1",
            "MANGASYNC_SECRET_KEY": secrets.token_urlsafe(32),
            "MANGASYNC_RUN_RETENTION": retention,
            "DAGSTER_HOME": str(home),
            "PYTHONUNBUFFERED": "1"}


def run_job(launcher: Launcher, job: str, env: dict[str, str], home: Path, logs: Path,
            timeout: float) -> None:
    code = launcher.run_to_end(Service(
        job, [venv_script("dg"), "launch", "--job", job, "--module-name", DEFINITIONS_MODULE],
        env=env, cwd=home, output=logs / f"{job}.log"), timeout=timeout)
    if code != 0:
        raise SystemExit(f"{job} failed (exit code {code}); see {logs / f'{job}.log'}")


def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="mangasync-soak-"))
    logs = tmp / "logs"
    say(f"work folder {tmp} (logs in {logs})")
    with throwaway_db("postgresql", tmp) as db, throwaway_pg_database() as dagster_db, \
            Launcher(echo=say) as launcher:
        home = dagster_home(tmp, dagster_db)
        ports = {"mangadex": free_port(), "http": free_port(), "dagster": free_port(),
                 "udp": free_port(kind=socket.SOCK_DGRAM)}
        env = stack_env(tmp, db, home, ports, args.retention, args.catalogue)
        os.environ["MANGASYNC_SECRET_KEY"] = env["MANGASYNC_SECRET_KEY"]  # users' tokens
        settings = Settings.from_env(env)
        sim = launcher.start(Service(
            "mangadex", python_command("fake-mangadex", "--port", str(ports["mangadex"]),
                                       "--seed", str(args.seed), "--manga",
                                       str(args.simulated_manga), "--rate-limit", str(RATE)),
            env=env, output=logs / "mangadex.log"))
        sim_url = settings.mangadex_api_url
        launcher.wait_until(sim, lambda: http_ok(f"{sim_url}/ping"), 180, "its /ping")
        started = time.monotonic()
        _, _, where = start_system(launcher, settings, env, dagster_home=home,
                                   dagster_host="127.0.0.1", dagster_port=ports["dagster"],
                                   logs=logs)
        say(f"stack up in {time.monotonic() - started:.0f}s: Dagster {where.dagster_ui}, "
            f"server {where.server_http}; initial_sync_job of {args.catalogue} manga...")
        run_job(launcher, "initial_sync_job", env, home, logs, 900)
        engine = make_engine(db)
        with engine.connect() as conn:
            catalogued = dict(conn.execute(select(t.manga.c.id, t.manga.c.mangadex_id)).all())
        say(f"{len(catalogued)} manga catalogued; {args.readers} readers, "
            f"{args.follows} manga each")
        readers = make_readers(engine, args.readers, sorted(catalogued), args.follows, rng)
        with SimulatorAdmin(sim_url) as admin:
            traffic = Traffic(admin, sorted(catalogued.values()), args.chapters_per_hour,
                              args.manga_per_hour, args.second_group, args.seed)
            group = Readers(readers, ("127.0.0.1", ports["udp"]), args.online_mean,
                            args.offline_mean, args.seed)
            memory = Memory()
            return run_soak(args, launcher, engine, admin, traffic, group, memory, started,
                            dagster_db, env, home, logs, where.server_http)


def run_soak(args: argparse.Namespace, launcher: Launcher, engine: Engine,
             admin: SimulatorAdmin, traffic: Traffic, group: Readers, memory: Memory,
             started: float, dagster_db: str, env: dict[str, str], home: Path, logs: Path,
             server: str) -> dict[str, Any]:
    with engine.connect() as conn:
        first_notification = int(conn.scalar(select(func.max(t.notifications.c.id))) or 0)
    chapters_before = count(engine, t.chapters)
    group.start()
    wait_until(lambda: group.online() >= len(group.readers) // 2, 60,
               "readers did not come on line")
    time.sleep(5)
    admin.reset_stats()
    before = storage(dagster_db)
    soak_from = time.monotonic() - started
    memory.sample(launcher, started)
    traffic.start()
    end = time.monotonic() + args.minutes * 60
    next_line = time.monotonic() + 60
    progress: list[dict[str, Any]] = []
    say(f"traffic on for {args.minutes} min: {args.chapters_per_hour:g} chapters/h, "
        f"{args.manga_per_hour:g} new manga/h; Dagster storage "
        f"{before['database_bytes'] / MB:.1f} MB")
    while time.monotonic() < end:
        time.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
        memory.sample(launcher, started)
        exited = launcher.first_exited()
        if exited is not None:
            raise SystemExit(f"{exited.service.name} stopped during the soak "
                             f"(exit code {exited.process.returncode})")
        if time.monotonic() >= next_line or time.monotonic() >= end:
            next_line += 60
            progress.append(progress_line(args, engine, group, traffic, memory, dagster_db,
                                          chapters_before, first_notification, started,
                                          soak_from))
    traffic.finish()
    soak_to = time.monotonic() - started
    published = list(traffic.published)
    say(f"traffic stopped: {sum(p.kind != 'manga' for p in published)} chapters and "
        f"{sum(p.kind == 'manga' for p in published)} manga published; draining...")

    # The pipeline gets its time to announce what it owes (the new-manga sensor polls every
    # 5 minutes), then every reader comes back for its catch-up.
    drain_end = time.monotonic() + args.drain
    while time.monotonic() < drain_end:
        ids = local_ids(engine, [p.mangadex_manga for p in published])
        owed = due(published, ids, group.readers)
        have = notifications_by_user(engine, first_notification)
        short = sum(len(owed[u] - {key_of(r) for r in have.get(u, [])}) for u in owed)
        if short == 0:
            break
        memory.sample(launcher, started)
        time.sleep(5)
    drained = time.monotonic()
    group.final.set()
    say(f"pipeline drained in {drained - (soak_to + started):.0f}s; every reader on line "
        "for its catch-up...")
    catch_up_end = time.monotonic() + args.catch_up
    while time.monotonic() < catch_up_end:
        have = notifications_by_user(engine, first_notification)
        if all({r.id for r in have.get(reader.user_id, [])} <= set(reader.received)
               for reader in group.readers):
            break
        time.sleep(2)
    time.sleep(3)  # the last ACKs
    group.join()
    say(f"readers off line; caught up in {time.monotonic() - drained:.0f}s")

    requests = admin.stats()
    ids = local_ids(engine, [p.mangadex_manga for p in published])
    have = notifications_by_user(engine, first_notification)
    chapters_after = count(engine, t.chapters)
    after = storage(dagster_db)
    results = account(published, ids, have, group.readers)
    with httpx.Client() as http:
        health = http.get(f"{server}/health").json()

    say(f"prune_runs_job with MANGASYNC_RUN_RETENTION={args.retention}...")
    run_job(launcher, "prune_runs_job", env, home, logs, 900)
    pruned = storage(dagster_db)
    prune_log = (logs / "prune_runs_job.log").read_text(errors="replace")
    kept_line = next((line.split(" - ")[-1].strip() for line in prune_log.splitlines()
                      if "runs deleted" in line), "")
    launcher.stop_all()
    vacuum_full(dagster_db)
    compacted = storage(dagster_db)
    stored_chapters = chapters_after - chapters_before
    return {
        "command": command(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "published": dict(Counter(p.kind for p in published)),
        "chapters_stored": stored_chapters,
        "traffic_errors": traffic.errors,
        "mangadex_requests": requests,
        "server_health": health,
        "readers": results,
        "memory": memory.report(soak_from, soak_to),
        "soak_seconds": round(soak_to - soak_from, 1),
        "storage": {
            "before": before, "after": after, "after_prune": pruned,
            "after_prune_vacuum_full": compacted,
            "growth_bytes": after["database_bytes"] - before["database_bytes"],
            "growth_per_1000_chapters_mb": round(
                (after["database_bytes"] - before["database_bytes"]) / MB
                / max(stored_chapters, 1) * 1000, 2),
            "prune_report": kept_line,
        },
        "progress": progress,
    }


def progress_line(args: argparse.Namespace, engine: Engine, group: Readers, traffic: Traffic,
                  memory: Memory, dagster_db: str, chapters_before: int,
                  first_notification: int, started: float, soak_from: float) -> dict[str, Any]:
    minute = (time.monotonic() - started - soak_from) / 60
    published = list(traffic.published)
    size = storage(dagster_db)
    with engine.connect() as conn:
        notes = int(conn.scalar(select(func.count()).select_from(t.notifications)
                                .where(t.notifications.c.id > first_notification)) or 0)
    row = {"minute": round(minute, 1),
           "chapters_published": sum(p.kind != "manga" for p in published),
           "manga_published": sum(p.kind == "manga" for p in published),
           "chapters_stored": count(engine, t.chapters) - chapters_before,
           "notifications": notes,
           "received": sum(len(r.received) for r in group.readers),
           "online": group.online(),
           "runs": size["rows"].get("runs", 0),
           "dagster_mb": round(size["database_bytes"] / MB, 1),
           "rss_mb": round(memory.total(), 0),
           "load_average": os.getloadavg()[0]}
    say(f"[{minute:4.1f}/{args.minutes} min] chapters {row['chapters_published']} published, "
        f"{row['chapters_stored']} stored; manga {row['manga_published']}; notifications "
        f"{notes}, received {row['received']}; readers on line {row['online']}/"
        f"{len(group.readers)}; runs {row['runs']}; Dagster DB {row['dagster_mb']} MB; "
        f"RSS all {row['rss_mb']:.0f} MB; load {row['load_average']:.1f}")
    return row


def account(published: list[Published], ids: dict[str, int], have: dict[int, list[Any]],
            readers: list[Reader]) -> dict[str, Any]:
    owed = due(published, ids, readers)
    appeared = {(ids.get(p.mangadex_manga), p.label): p for p in published
                if p.kind == "chapter"}
    per_reader = []
    live: list[float] = []
    catch_up: list[float] = []
    for reader in readers:
        rows = have.get(reader.user_id, [])
        keys = Counter(key_of(r) for r in rows)
        db_ids = {int(r.id) for r in rows}
        not_created = sorted(owed[reader.user_id] - set(keys), key=str)
        not_received = sorted(db_ids - set(reader.received))
        received_keys = Counter(key_of_msg(reader.received[i].msg) for i in reader.received)
        for receipt in reader.received.values():
            msg = receipt.msg
            if msg.get("type") != "NEW_CHAPTER":
                continue
            p = appeared.get((int(msg["manga_id"]), msg.get("label")))
            if p is None:
                continue
            if receipt.online_since <= p.at:
                live.append(receipt.at - p.at)
            else:
                catch_up.append(receipt.at - receipt.online_since)
        per_reader.append({
            "user": reader.user, "user_id": reader.user_id, "due": len(owed[reader.user_id]),
            "in_database": len(rows), "received": len(reader.received),
            "missed_not_created": [list(k) for k in not_created],
            "missed_not_received": not_received,
            "duplicated_in_database": [list(k) for k, n in keys.items() if n > 1],
            "duplicated_received": [list(k) for k, n in received_keys.items() if n > 1],
            "received_again_later": sorted(set(reader.again_later)),
            "unexpected": [int(r.id) for r in rows if key_of(r) not in owed[reader.user_id]],
            "not_in_database": sorted(set(reader.received) - db_ids),
            "repeated_datagrams": reader.repeated_datagrams,
            "online_periods": len(reader.periods),
            "online_share": round(online_share(reader), 3),
            "errors": reader.errors[:5],
        })
    # When the server stored a chapter's first notification: the pipeline's share.
    first: dict[tuple[int, str | None], float] = {}
    for rows in have.values():
        for row in rows:
            if row.type == "NEW_CHAPTER":
                k = (int(row.manga_id), row.label)
                at = row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC).timestamp()
                first[k] = min(first.get(k, at), at)
    notified = [first[k] - p.at for k, p in appeared.items() if k in first]
    return {"per_reader": per_reader, "latency_live": summary(live),
            "latency_catch_up_after_online": summary(catch_up),
            "appear_to_notification_stored": summary(notified)}


def key_of_msg(msg: dict[str, Any]) -> tuple[str, int, str | None]:
    kind = str(msg.get("type"))
    return (kind, int(msg["manga_id"]), msg.get("label") if kind == "NEW_CHAPTER" else None)


def online_share(reader: Reader) -> float:
    if not reader.periods:
        return 0.0
    first = reader.periods[0][0]
    last = max(end or time.time() for _, end in reader.periods)
    on = sum((end or time.time()) - start for start, end in reader.periods)
    return on / max(last - first, 1e-9)


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50": round(percentile(values, 0.5), 2),
            "p95": round(percentile(values, 0.95), 2), "max": round(max(values), 2),
            "min": round(min(values), 2)}


def machine() -> str:
    cpus = os.cpu_count()
    try:
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        gb = int(mem.split()[1]) / 1024 / 1024
    except (OSError, StopIteration):
        gb = math.nan
    return f"{cpus} cores, {gb:.1f} GB RAM, load average {os.getloadavg()[0]:.1f} at the end"


# --- report ---------------------------------------------------------------------------------

def report(r: dict[str, Any]) -> None:
    readers = r["readers"]["per_reader"]

    def total(name: str) -> int:
        return sum(len(x[name]) if isinstance(x[name], list) else x[name] for x in readers)

    print(f"\n`{r['command']}`\n\n{r['machine']}; soak {r['soak_seconds'] / 60:.1f} min\n")
    print(table(["measure", "result"], [
        ["published", ", ".join(f"{v} {k}" for k, v in sorted(r["published"].items()))],
        ["chapters stored in MangaHub", r["chapters_stored"]],
        ["MangaDex requests (all processes)", f"{r['mangadex_requests']['total']} "
         f"({r['mangadex_requests']['total'] / max(r['soak_seconds'], 1) * 60:.1f}/min), "
         f"429s {r['mangadex_requests']['rate_limited']}"],
        ["announcements due to the readers", total("due")],
        ["notifications in the database", total("in_database")],
        ["**missed**: due, never created", total("missed_not_created")],
        ["**missed**: created, never received", total("missed_not_received")],
        ["**duplicated**: two notifications of one chapter/manga to one reader",
         total("duplicated_in_database")],
        ["**duplicated**: received again in a later on-line period",
         total("received_again_later")],
        ["unexpected (in the database, not due)", total("unexpected")],
        ["repeated datagrams within a session (dropped by id)", total("repeated_datagrams")],
        ["readers with any miss or duplicate", sum(
            bool(x["missed_not_created"] or x["missed_not_received"]
                 or x["duplicated_in_database"] or x["received_again_later"])
            for x in readers)],
        ["on-line periods per reader (median), share of time on line (median)",
         f"{statistics.median(x['online_periods'] for x in readers):.0f}, "
         f"{statistics.median(x['online_share'] for x in readers):.0%}"],
    ]))
    print()
    rows = []
    for name, key in (("chapter to reader, reader on line throughout", "latency_live"),
                      ("back on line to receipt (catch-up)", "latency_catch_up_after_online"),
                      ("chapter to its notification stored by the server",
                       "appear_to_notification_stored")):
        s = r["readers"][key]
        rows.append([name, s["count"], *(f"{s[q]:.1f} s" if s["count"] else "-"
                                         for q in ("p50", "p95", "max"))])
    print(table(["latency", "count", "p50", "p95", "max"], rows))
    print()
    mem_rows = []
    for m in r["memory"]:
        if m["process"] == "run worker":
            mem_rows.append([f"run workers ({m['count']})", "-", "-", f"{m['max_mb']} max, "
                             f"{m['median_peak_mb']} median peak", "-"])
        else:
            mem_rows.append([m["process"], m["start_mb"], m["end_mb"], m["max_mb"],
                             f"{m['slope_mb_per_hour']:+.1f}"])
    print(table(["process", "RSS start (MB)", "end (MB)", "max (MB)", "slope (MB/hour)"],
                mem_rows))
    print()
    s = r["storage"]
    grown = {k: s["after"]["tables"].get(k, 0) - s["before"]["tables"].get(k, 0)
             for k in s["after"]["tables"]}
    top = sorted(grown, key=lambda k: -grown[k])[:6]
    stages = (("before the traffic", "before"), ("after the traffic", "after"),
              ("after prune_runs_job", "after_prune"),
              ("after prune and VACUUM FULL", "after_prune_vacuum_full"))
    print(table(["Dagster storage (PostgreSQL)", "database", "runs", "event_logs rows",
                 "asset_check_executions rows", "job_ticks rows", *top], [
        [name, f"{s[k]['database_bytes'] / MB:.1f} MB", s[k]["rows"].get("runs", "-"),
         s[k]["rows"].get("event_logs", "-"), s[k]["rows"].get("asset_check_executions", "-"),
         s[k]["rows"].get("job_ticks", "-"),
         *(f"{s[k]['tables'].get(tn, 0) / MB:.2f} MB" for tn in top)]
        for name, k in stages]))
    print(f"\ngrowth: {s['growth_bytes'] / MB:.1f} MB for {r['chapters_stored']} chapters "
          f"stored = **{s['growth_per_1000_chapters_mb']} MB per 1,000 chapters**")
    print(f"prune_runs_job: {s['prune_report']}")
    print(f"runs by status after the traffic: {s['after']['statuses'].get('runs')}; sensor and "
          f"schedule ticks by status: {s['after']['statuses'].get('job_ticks')}")
    problems = [x for x in readers if x["missed_not_created"] or x["missed_not_received"]
                or x["duplicated_in_database"] or x["received_again_later"]]
    for x in problems[:10]:
        print(f"\n{x['user']} (user {x['user_id']}): not created {x['missed_not_created'][:5]}, "
              f"not received {x['missed_not_received'][:10]}, duplicated "
              f"{x['duplicated_in_database'][:5]}, again later {x['received_again_later'][:10]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--follows", type=int, default=20, help="manga each reader follows")
    parser.add_argument("--catalogue", type=int, default=200,
                        help="manga imported by initial_sync_job (INITIAL_SYNC_LIMIT)")
    parser.add_argument("--simulated-manga", type=int, default=1000)
    parser.add_argument("--chapters-per-hour", type=float, default=180,
                        help="new English chapters an hour on MangaDex")
    parser.add_argument("--second-group", type=float, default=0.05,
                        help="share of uploads that are a second group's copy of a new label")
    parser.add_argument("--manga-per-hour", type=float, default=3)
    parser.add_argument("--online-mean", type=float, default=None,
                        help="seconds a reader stays on line, on average [minutes*6, >= 30]")
    parser.add_argument("--offline-mean", type=float, default=None,
                        help="seconds a reader stays off line, on average [half of on line]")
    parser.add_argument("--retention", default=None,
                        help="MANGASYNC_RUN_RETENTION for the prune at the end [half the soak]")
    parser.add_argument("--drain", type=float, default=420,
                        help="seconds the pipeline gets after the traffic to announce it all")
    parser.add_argument("--catch-up", type=float, default=180,
                        help="seconds the readers get, all on line, to receive it all")
    parser.add_argument("--sample-every", type=float, default=5.0,
                        help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path,
                        default=Path(tempfile.gettempdir()) / "mangasync-soak.json")
    args = parser.parse_args()
    args.online_mean = args.online_mean or max(30.0, args.minutes * 6)
    args.offline_mean = args.offline_mean or args.online_mean / 2
    args.retention = args.retention or f"{max(1, int(args.minutes // 2))}m"
    # Ctrl-C or a kill stops the stack and drops the databases (also when started with
    # nohup, which leaves SIGINT ignored).
    with stop_on_signals():
        result = soak(args)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    report(result)
    print(f"\nfull result: {args.json}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
