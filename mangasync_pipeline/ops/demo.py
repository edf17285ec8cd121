"""`mangasync demo`: the whole system offline, against a simulator that keeps publishing.

Everything lives under `.mangasync/demo/` (database, Dagster storage, logs), started afresh
each time, so a demo never touches the operator's own data or MangaDex itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import click
from sqlalchemy import Engine, select

from mangasync_pipeline.config import ConfigError, Settings, parse_interval
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import upgrade
from mangasync_pipeline.ops.launcher import (
    Launcher,
    LaunchError,
    Service,
    http_ok,
    python_command,
    run_session,
    venv_script,
)
from mangasync_pipeline.ops.system import (
    DEFINITIONS_MODULE,
    PortNeed,
    pick_port,
    require_free_ports,
    start_system,
    system_ports,
)

DEMO_USER = "demo"
OTHER_TERMINAL = ("DATABASE_URL", "MANGADEX_API_URL", "NOTIFY_SERVER_URL",
                  "MANGASYNC_HTTP_PORT", "MANGASYNC_UDP_PORT")
MINUTE = timedelta(minutes=1)


def demo_environment(workdir: Path, *, mangadex_port: int, http_port: int, udp_port: int,
                     initial_sync_limit: int, poll_interval: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{workdir / 'mangahub.sqlite'}",
        "MANGADEX_API_URL": f"http://127.0.0.1:{mangadex_port}",
        "MANGADEX_RATE_LIMIT": "5",
        "NEW_MANGA_POLL_INTERVAL": poll_interval,
        # The schedule is the safety net behind the 30 s chapter sensor and fires at whole
        # minutes: a demo interval under a minute polls it every minute.
        "CHAPTER_POLL_INTERVAL": (poll_interval if parse_interval(poll_interval) >= MINUTE
                                  else "1m"),
        "INITIAL_SYNC_LIMIT": str(initial_sync_limit),
        "NOTIFY_SERVER_URL": f"http://127.0.0.1:{http_port}",
        "MANGASYNC_HTTP_PORT": str(http_port),
        "MANGASYNC_UDP_PORT": str(udp_port),
        "MANGASYNC_BIND": "127.0.0.1",
        "DAGSTER_HOME": str(workdir / "dagster_home"),
    }


def create_demo_user(engine: Engine, library_size: int) -> tuple[str, list[str]]:
    """The demo user, following the newest catalogued manga; returns (token, their titles)."""
    from mangasync_pipeline.notify.users import add_user, library_add

    _user_id, token = add_user(engine, DEMO_USER)
    with engine.connect() as conn:
        newest = conn.execute(select(t.manga.c.mangadex_id).order_by(
            t.manga.c.created_at.desc()).limit(library_size)).scalars().all()
    titles = [library_add(engine, DEMO_USER, mangadex_id)[0].title for mangadex_id in newest]
    return token, titles


def follow_new_manga(engine: Engine, since_id: int, stop: threading.Event,
                     every: float = 5.0) -> None:
    """Add each manga the pipeline catalogues from now on to the demo user's library, so that
    the simulator's new chapters for them reach the terminal as NEW_CHAPTER notifications."""
    from mangasync_pipeline.notify.users import library_add

    last = since_id
    while not stop.wait(every):
        try:
            with engine.connect() as conn:
                fresh = conn.execute(select(t.manga.c.id, t.manga.c.mangadex_id)
                                     .where(t.manga.c.id > last).order_by(t.manga.c.id)).all()
            for row in fresh:
                library_add(engine, DEMO_USER, row.mangadex_id)
                last = int(row.id)
        except Exception as exc:  # the demo goes on; the next round tries again
            click.echo(f"demo: could not update the demo library: {exc}", err=True)


def _reset(workdir: Path) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)


def _chosen(option: int | None, preferred: int, kind: int = socket.SOCK_STREAM) -> int:
    return option if option else pick_port(preferred, kind=kind)


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".mangasync/demo"), show_default=True,
              help="Where the demo keeps its database, Dagster storage and logs (emptied first).")
@click.option("--manga", "manga_count", default=500, show_default=True,
              type=click.IntRange(min=1), help="Manga in the simulated catalogue.")
@click.option("--seed", default=42, show_default=True, type=int, help="Simulator seed.")
@click.option("--publish-every", default=10.0, show_default=True,
              type=click.FloatRange(min=1), help="Seconds between the simulator's publications.")
@click.option("--poll-interval", default="30s", show_default=True,
              help="NEW_MANGA_POLL_INTERVAL and CHAPTER_POLL_INTERVAL of the demo.")
@click.option("--initial-sync", "initial_sync_limit", default=100, show_default=True,
              type=click.IntRange(min=1), help="Manga imported by the initial sync.")
@click.option("--library", "library_size", default=5, show_default=True,
              type=click.IntRange(min=0), help="Catalogued manga the demo user starts with.")
@click.option("--dagster-port", type=click.IntRange(0, 65535), default=None,
              help="Dagster UI port [3000, or a free one if taken].")
@click.option("--http-port", type=click.IntRange(0, 65535), default=None,
              help="Notification server HTTP port [8085, or a free one if taken].")
@click.option("--udp-port", type=click.IntRange(0, 65535), default=None,
              help="Notification server UDP port [9091, or a free one if taken].")
@click.option("--mangadex-port", type=click.IntRange(0, 65535), default=None,
              help="Simulator port [8089, or a free one if taken].")
def demo(workdir: Path, manga_count: int, seed: int, publish_every: float, poll_interval: str,
         initial_sync_limit: int, library_size: int, dagster_port: int | None,
         http_port: int | None, udp_port: int | None, mangadex_port: int | None) -> None:
    """The whole system offline: simulator, server, Dagster, and a demo user listening."""
    workdir = workdir.resolve()
    ports = {
        "mangadex": _chosen(mangadex_port, 8089),
        "http": _chosen(http_port, 8085),
        "udp": _chosen(udp_port, 9091, socket.SOCK_DGRAM),
        "dagster": _chosen(dagster_port, 3000),
    }
    env = {**os.environ, **demo_environment(
        workdir, mangadex_port=ports["mangadex"], http_port=ports["http"],
        udp_port=ports["udp"], initial_sync_limit=initial_sync_limit,
        poll_interval=poll_interval)}
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:  # before the reset: a busy port must not cost the previous demo's data
        require_free_ports([
            PortNeed("127.0.0.1", ports["mangadex"], "MangaDex simulator", "--mangadex-port"),
            *system_ports(settings, "127.0.0.1", ports["dagster"], http_setting="--http-port",
                          udp_setting="--udp-port"),
        ])
    except LaunchError as exc:
        raise click.ClickException(str(exc)) from None

    _reset(workdir)
    logs = workdir / "logs"
    upgrade(settings.database_url)
    say: Callable[[str], None] = lambda line: click.echo(f"demo: {line}", err=True)  # noqa: E731
    stop_following = threading.Event()

    def body(launcher: Launcher) -> None:
        say(f"starting in {workdir} (logs in {logs})")
        simulator = launcher.start(Service(
            "mangadex",
            python_command("fake-mangadex", "--port", str(ports["mangadex"]), "--seed",
                           str(seed), "--manga", str(manga_count), "--rate-limit", "5",
                           "--publish-every", str(publish_every)),
            env=env, output=logs / "mangadex.log"))
        ping = f"{settings.mangadex_api_url}/ping"
        launcher.wait_until(simulator, lambda: http_ok(ping), 120, f"answer on {ping}")
        say(f"MangaDex simulator on {settings.mangadex_api_url} ({manga_count} manga, "
            f"a new one every {publish_every:g}s)")

        _server, _dagster, where = start_system(
            launcher, settings, env, dagster_home=workdir / "dagster_home",
            dagster_host="127.0.0.1", dagster_port=ports["dagster"], logs=logs)
        say(f"notification server on {where.server_http} (UDP {where.server_udp})")
        say(f"Dagster UI on {where.dagster_ui}; running initial_sync_job...")

        started = time.monotonic()
        code = launcher.run_to_end(Service(
            "initial-sync",
            [venv_script("dg"), "launch", "--job", "initial_sync_job",
             "--module-name", DEFINITIONS_MODULE],
            env={**env, "DAGSTER_HOME": str(workdir / "dagster_home")}, cwd=workdir,
            output=logs / "initial-sync.log"), timeout=600)
        if code != 0:
            raise LaunchError(f"initial_sync_job failed (exit code {code}; see "
                              f"{logs / 'initial-sync.log'} and the run in "
                              f"{where.dagster_ui}/runs)")
        engine = make_engine(settings.database_url)
        with engine.connect() as conn:
            catalogued = conn.scalar(select(t.manga.c.id).order_by(t.manga.c.id.desc())) or 0
        say(f"initial sync done in {time.monotonic() - started:.0f}s: {catalogued} manga")

        token, titles = create_demo_user(engine, library_size)
        threading.Thread(target=follow_new_manga, args=(engine, catalogued, stop_following),
                         name="demo-follow", daemon=True).start()
        click.echo("\n".join([
            "",
            "mangasync demo is running (Ctrl-C stops everything):",
            f"  Dagster UI           {where.dagster_ui}",
            f"  notification server  {where.server_http} (UDP {where.server_udp})",
            f"  MangaDex simulator   {settings.mangadex_api_url}",
            f"  demo user            {DEMO_USER}, token {token}",
            f"  library              {', '.join(titles) or '(empty)'}, and every new manga",
            # Every command of another terminal must reach the demo's database, simulator and
            # server, never the real MangaDex (a backfill there would open the breaker).
            "  another terminal     export " + " ".join(
                f"{name}={env[name]}" for name in OTHER_TERMINAL),
            "                       then: mangasync status, mangasync backfill --from DAY",
            f"  logs                 {logs}",
            "",
            f"Notifications for {DEMO_USER} appear below as they arrive "
            f"(new manga every ~{poll_interval}):",
        ]), err=True)
        listener = launcher.start(Service(
            "listen",
            python_command("listen", "--user", DEMO_USER, "--server",
                           "127.0.0.1", "--udp-port", str(ports["udp"])),
            env={**env, "MANGASYNC_READER_TOKEN": token}, output="inherit"))
        launcher.supervise(foreground=listener)

    try:
        run_session(body, echo=say)
    finally:
        stop_following.set()
