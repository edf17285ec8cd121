"""`mangasync`: the operator's command line (CONTRACTS.md, "Command line")."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from mangasync_pipeline.config import ConfigError, Settings, without_password
from mangasync_pipeline.db.migrate import SchemaError

# Subcommands live beside the code they drive and are imported only when used, so that
# `mangasync migrate` does not pay for FastAPI or Dagster imports.
LAZY_COMMANDS: dict[str, str] = {
    "run": "mangasync_pipeline.ops.run:run",
    "server": "mangasync_pipeline.notify.commands:server",
    "listen": "mangasync_pipeline.notify.commands:listen",
    "users": "mangasync_pipeline.notify.commands:users",
    "library": "mangasync_pipeline.notify.commands:library",
    "fake-mangadex": "mangasync_pipeline.mangadex.simulator.cli:fake_mangadex",
    "demo": "mangasync_pipeline.ops.demo:demo",
    "status": "mangasync_pipeline.ops.status:status",
    "sync-manga": "mangasync_pipeline.sync.commands:sync_manga",
    "initial-sync": "mangasync_pipeline.sync.commands:initial_sync_command",
    "backfill": "mangasync_pipeline.sync.commands:backfill",
}

# Errors a user can cause: printed as one line, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, SchemaError)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module_name, attr = LAZY_COMMANDS[cmd_name].split(":")
            try:
                return getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise click.ClickException(f"`{cmd_name}` is not available: {exc}") from None
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def cli(verbose: bool) -> None:
    """Keep MangaHub in sync with MangaDex and notify readers."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
def migrate() -> None:
    """Create or upgrade the MangaHub schema (safe to run again)."""
    from mangasync_pipeline.db.engine import describe
    from mangasync_pipeline.db.migrate import upgrade

    settings = load_settings()
    where = describe(settings.database_url)
    # A database that cannot be reached is one line from main() (docker compose shows it as
    # the reason `up` failed), not a traceback.
    before, after = upgrade(settings.database_url)
    if before == after:
        click.echo(f"{where}: schema already at {after}")
    else:
        click.echo(f"{where}: schema upgraded from {before or 'empty'} to {after}")


def unreachable_database(exc: BaseException) -> str | None:
    """One line for an error that means the database cannot be reached (else None): which
    database, without its password, and why, without the traceback."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        cause = exc.orig if exc.orig is not None else exc
    elif type(exc).__module__.startswith("psycopg") and type(exc).__name__ == "OperationalError":
        cause = exc  # (LISTEN connections use psycopg directly)
    else:
        return None
    from mangasync_pipeline.db.engine import describe

    try:
        where = describe(Settings.from_env().database_url)
    except (ConfigError, ValueError):
        where = "the database"
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return without_password(f"cannot reach {where}: {lines[0] if lines else type(cause).__name__}")


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="mangasync", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except USER_ERRORS as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        line = unreachable_database(exc)
        if line is None:
            raise
        click.echo(f"error: {line}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    sys.exit(main())
