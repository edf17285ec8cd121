"""`mangasync server|listen|users|library` (CONTRACTS.md, "Command line")."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click
from sqlalchemy import Engine

if TYPE_CHECKING:
    from mangasync_pipeline.notify.client import NotificationClient

from mangasync_pipeline.config import ConfigError, Settings
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import SchemaError, check_schema


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _engine() -> Engine:
    engine = make_engine(_settings().database_url)
    try:
        check_schema(engine)
    except SchemaError as exc:
        raise click.ClickException(str(exc)) from None
    return engine


@click.command()
@click.option("--heartbeat", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds announced to clients; sessions end after 3 x this without traffic.")
@click.option("--send-budget", type=click.IntRange(min=1), default=30, show_default=True,
              help="Notifications pushed per user per minute; the rest follow at this pace.")
@click.option("--max-sessions-per-user", type=click.IntRange(min=1), default=16,
              show_default=True,
              help="Devices a user may have registered at once; a new one ends the oldest.")
def server(heartbeat: float, send_budget: int, max_sessions_per_user: int) -> None:
    """Run the notification server: HTTP triggers and API, and UDP push."""
    from mangasync_pipeline.notify.app import run_server
    from mangasync_pipeline.notify.options import ServerOptions
    from mangasync_pipeline.notify.tokens import master_key

    settings = _settings()
    try:
        key = master_key(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        run_server(settings, ServerOptions(heartbeat=heartbeat, send_budget=send_budget,
                                           max_sessions_per_user=max_sessions_per_user,
                                           secret_key=key))
    except (SchemaError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {settings.bind} (HTTP {settings.http_port}, UDP "
            f"{settings.udp_port}): {exc.strerror or exc}") from None


@click.group()
def users() -> None:
    """Readers who receive notifications."""


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


TOKEN_ENV = "MANGASYNC_READER_TOKEN"


def _reader_token(token: str | None, token_file: Path | None) -> str:
    """The reader's token: from a file (owner-only), the environment or, discouraged because
    `ps` shows it to every user of the machine, the command line."""
    from mangasync_pipeline.notify.tokens import read_private_file

    if token_file is not None:
        try:
            value = read_private_file(token_file, "--token-file").strip()
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        if not value:
            raise click.ClickException(f"--token-file={str(token_file)!r} is empty")
        return value
    if token:
        click.echo(f"warning: a token on the command line is visible to every user of this "
                   f"machine (ps); prefer {TOKEN_ENV} or --token-file", err=True)
        return token
    value = os.environ.get(TOKEN_ENV, "").strip()
    if not value:
        raise click.ClickException(f"no token: set {TOKEN_ENV}, or give --token-file PATH "
                                   "(the token printed by `mangasync users add`)")
    return value


@click.command()
@click.option("--user", "-u", required=True, help="Username (see `mangasync users add`).")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A file (mode 0600) holding the token printed by `mangasync users add`.")
@click.option("--token", "-t", default=None,
              help=f"The token itself; visible to others in `ps`: prefer {TOKEN_ENV} or "
                   "--token-file.")
@click.option("--server", "host", default=None, help="Server host [MANGASYNC_BIND or 127.0.0.1].")
@click.option("--udp-port", type=click.IntRange(1, 65535), default=None,
              help="Server UDP port [MANGASYNC_UDP_PORT or 9091].")
def listen(user: str, token_file: Path | None, token: str | None, host: str | None,
           udp_port: int | None) -> None:
    """Print notifications as they arrive (Ctrl-C to stop). The token comes from
    --token-file, else MANGASYNC_READER_TOKEN."""
    from mangasync_pipeline.notify.client import AuthFailed, NotificationClient

    token = _reader_token(token, token_file)
    settings = _settings()
    host = host or settings.bind
    port = udp_port or settings.udp_port
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        client = NotificationClient(host, port, user, token)
    except OSError as exc:
        raise click.ClickException(f"cannot reach {host}:{port}: {exc}") from None
    try:
        _listen_loop(client, f"{host}:{port}")
    except AuthFailed:
        raise click.ClickException(
            f"server {host}:{port} refused user {user!r}: check --user and the token, "
            "and that this machine's clock is right") from None
    except KeyboardInterrupt:
        client.unregister(timeout=0.5)
        click.echo("stopped", err=True)
    finally:
        client.close()


LISTEN_FIRST_WAIT = 2.0  # seconds before saying that the server does not answer
LISTEN_MAX_BACKOFF = 30.0


def _listen_loop(client: NotificationClient, where: str) -> None:
    """Register, print notifications; while the server does not answer, say so once and
    retry with exponential backoff."""
    from mangasync_pipeline.notify.client import format_notification

    registered = 0
    backoff = 1.0
    outage = False
    while True:
        if client.session is None:
            try:
                client.register(timeout=LISTEN_FIRST_WAIT, attempts=1)
            except TimeoutError:
                if not outage:
                    outage = True
                    state = "stopped answering" if registered else "does not answer"
                    click.echo(f"server {where} {state} (is `mangasync server` running "
                               f"there?); retrying with backoff up to every "
                               f"{LISTEN_MAX_BACKOFF:g} s", err=True)
                time.sleep(backoff)
                backoff = min(LISTEN_MAX_BACKOFF, backoff * 2)
                continue
        # Said before the backlog is printed, not after the first poll shows it.
        if client.registrations != registered and client.session is not None:
            registered = client.registrations
            outage, backoff = False, 1.0
            click.echo(f"listening as {client.user} on {where} (session "
                       f"{client.session[:8]}, {client.unread_at_register} unread)", err=True)
        client.poll(1.0, lambda msg: click.echo(format_notification(msg)))
        sys.stdout.flush()


@users.command("rotate-token")
@click.argument("username")
def users_rotate_token(username: str) -> None:
    """Give USERNAME a new token (printed once); the old one stops working."""
    from mangasync_pipeline.notify.users import UserError, rotate_token

    try:
        _, token = rotate_token(_engine(), username)
    except (UserError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {username} has a new token (shown only once; the old one no longer "
               "works):", err=True)
    click.echo(token)


@users.command("add")
@click.argument("username")
def users_add(username: str) -> None:
    """Create a user and print its token (shown only this once)."""
    from mangasync_pipeline.notify.users import UserError, add_user

    try:
        user_id, token = add_user(_engine(), username)
    except (UserError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {username} created (id {user_id}); token (shown only once):", err=True)
    click.echo(token)


@users.command("list")
def users_list() -> None:
    """List users (never their tokens)."""
    from mangasync_pipeline.notify.users import list_users

    rows = list_users(_engine())
    if not rows:
        click.echo("no users yet: mangasync users add NAME")
        return
    click.echo(f"{'id':>6}  {'username':<24} {'library':>7} {'unread':>6}  created")
    for r in rows:
        note = "" if r.has_token else "  no token: mangasync users rotate-token " + r.username
        click.echo(f"{r.id:>6}  {r.username:<24} {r.library:>7} {r.unread:>6}  "
                   f"{r.created_at:%Y-%m-%d %H:%M}Z{note}")


@click.group()
def library() -> None:
    """The manga a user follows (NEW_CHAPTER and MANGA_UPDATE go to them)."""


@library.command("add")
@click.argument("username")
@click.argument("manga")
def library_add_cmd(username: str, manga: str) -> None:
    """Add MANGA (local id, slug or MangaDex id) to USERNAME's library."""
    from mangasync_pipeline.notify.users import UserError, library_add

    try:
        info, added = library_add(_engine(), username, manga)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    state = "added to" if added else "already in"
    click.echo(f"{info.title} (#{info.id}, {info.slug}) {state} {username}'s library")


@library.command("remove")
@click.argument("username")
@click.argument("manga")
def library_remove_cmd(username: str, manga: str) -> None:
    """Remove MANGA from USERNAME's library."""
    from mangasync_pipeline.notify.users import UserError, library_remove

    try:
        info, removed = library_remove(_engine(), username, manga)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    state = "removed from" if removed else "was not in"
    click.echo(f"{info.title} (#{info.id}, {info.slug}) {state} {username}'s library")


@library.command("list")
@click.argument("username")
def library_list_cmd(username: str) -> None:
    """List USERNAME's library."""
    from mangasync_pipeline.notify.users import UserError, library_list

    try:
        rows = library_list(_engine(), username)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    if not rows:
        click.echo(f"{username}'s library is empty")
        return
    for r in rows:
        click.echo(f"{r['id']:>6}  {r['slug']:<40} {r['mangadex_id']}  {r['title']}")
