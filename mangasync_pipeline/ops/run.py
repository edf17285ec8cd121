"""The README's run command (`scripts/run.sh`): the whole system on embedded defaults.

Notification server and Dagster (webserver and daemon, schedules and sensors on) against the
MangaHub database of DATABASE_URL (SQLite under .mangasync/ by default) and MangaDex of
MANGADEX_API_URL. Dagster's instance is the dagster.yaml of the folder started in (a checkout's
root; storage in .dagster_home/), or DAGSTER_HOME when set (`ops.system.local_dagster_home`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mangasync_pipeline.db.engine import describe
from mangasync_pipeline.ops.launcher import Launcher, run_session
from mangasync_pipeline.ops.system import (
    local_dagster_home,
    require_free_ports,
    start_system,
    system_ports,
)


@click.command()
@click.option("--dagster-host", default="127.0.0.1", show_default=True,
              help="Address of the Dagster UI (0.0.0.0 to reach it from other machines).")
@click.option("--dagster-port", default=3000, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the Dagster UI.")
def run(dagster_host: str, dagster_port: int) -> None:
    """Run mangasync: notification server and Dagster, until Ctrl-C."""
    from mangasync_pipeline.cli import load_settings

    settings = load_settings()
    home = local_dagster_home(os.environ, Path.cwd())
    env = dict(os.environ)

    def body(launcher: Launcher) -> None:
        require_free_ports(system_ports(settings, dagster_host, dagster_port))
        _server, _dagster, where = start_system(
            launcher, settings, env, dagster_home=home, dagster_host=dagster_host,
            dagster_port=dagster_port)
        click.echo("\n".join([
            "",
            "mangasync is running (Ctrl-C stops everything):",
            f"  Dagster UI           {where.dagster_ui}",
            f"  notification server  {where.server_http} (UDP {where.server_udp})",
            f"  MangaHub database    {describe(settings.database_url)}",
            f"  MangaDex             {settings.mangadex_api_url}",
            "  health               mangasync status",
            "",
        ]), err=True)
        launcher.supervise()

    run_session(body)


def main() -> None:
    """`python -m mangasync_pipeline.ops.run [OPTIONS]`: `run` with the CLI's error handling."""
    from mangasync_pipeline.cli import cli
    from mangasync_pipeline.cli import main as cli_main

    if "run" not in cli.commands:
        cli.add_command(run)
    cli_main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    main()
