"""`mangasync server|listen|users|library` (CONTRACTS.md, "Command line")."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click
from sqlalchemy import Engine

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
def server(heartbeat: float, send_budget: int) -> None:
    """Run the notification server: HTTP triggers and API, and UDP push."""
    from mangasync_pipeline.notify.app import run_server
    from mangasync_pipeline.notify.options import ServerOptions

    settings = _settings()
    try:
        run_server(settings, ServerOptions(heartbeat=heartbeat, send_budget=send_budget))
    except (SchemaError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {settings.bind} (HTTP {settings.http_port}, UDP "
            f"{settings.udp_port}): {exc.strerror or exc}") from None


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command()
@click.option("--user", "-u", required=True, help="Username (see `mangasync users add`).")
@click.option("--token", "-t", required=True, help="The token printed by `mangasync users add`.")
@click.option("--server", "host", default=None, help="Server host [MANGASYNC_BIND or 127.0.0.1].")
@click.option("--udp-port", type=click.IntRange(1, 65535), default=None,
              help="Server UDP port [MANGASYNC_UDP_PORT or 9091].")
def listen(user: str, token: str, host: str | None, udp_port: int | None) -> None:
    """Print notifications as they arrive (Ctrl-C to stop)."""
    from mangasync_pipeline.notify.client import AuthFailed, NotificationClient, format_notification

    settings = _settings()
    host = host or settings.bind
    port = udp_port or settings.udp_port
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        client = NotificationClient(host, port, user, token)
    except OSError as exc:
        raise click.ClickException(f"cannot reach {host}:{port}: {exc}") from None
    registered = 0
    try:
        while True:
            try:
                client.poll(1.0, lambda msg: click.echo(format_notification(msg)))
            except AuthFailed:
                raise click.ClickException(
                    f"server {host}:{port} refused user {user!r}: check --user and --token, "
                    "and that this machine's clock is right") from None
            if client.registrations != registered:
                registered = client.registrations
                click.echo(f"listening as {user} on {host}:{port} (session "
                           f"{(client.session or '')[:8]}, {client.unread_at_register} unread)",
                           err=True)
            sys.stdout.flush()
    except KeyboardInterrupt:
        client.unregister(timeout=0.5)
        click.echo("stopped", err=True)
    finally:
        client.close()


@click.group()
def users() -> None:
    """Readers who receive notifications."""


@users.command("add")
@click.argument("username")
def users_add(username: str) -> None:
    """Create a user and print its token (shown only this once)."""
    from mangasync_pipeline.notify.users import UserError, add_user

    try:
        user_id, token = add_user(_engine(), username)
    except UserError as exc:
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
        click.echo(f"{r.id:>6}  {r.username:<24} {r.library:>7} {r.unread:>6}  "
                   f"{r.created_at:%Y-%m-%d %H:%M}Z")


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
