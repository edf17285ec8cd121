"""Sync from the command line, for operators without the Dagster UI at hand.

Dagster's backfills are the main tool; these run the same functions in the foreground with a
progress bar, and print one line on failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import click
from sqlalchemy import Engine
from tqdm import tqdm

from mangasync_pipeline.config import ConfigError, Settings
from mangasync_pipeline.db.engine import shared_engine
from mangasync_pipeline.db.migrate import check_schema
from mangasync_pipeline.mangadex.client import MangaDexClient, open_client
from mangasync_pipeline.mangadex.errors import MangaDexError
from mangasync_pipeline.sync.catalogue import (
    SILENT,
    CatalogueReport,
    day_bounds,
    import_created_range,
    initial_sync,
)
from mangasync_pipeline.sync.chapters import sync_chapter_window
from mangasync_pipeline.sync.manga_sync import sync_manga as sync_one_manga
from mangasync_pipeline.sync.notifier import Notifier


def _settings() -> Settings:
    """Validated settings and a migrated database, or a one-line error."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    check_schema(shared_engine(settings.database_url))
    return settings


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except (MangaDexError, LookupError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None


@contextmanager
def _session() -> Iterator[tuple[Settings, MangaDexClient]]:
    settings = _settings()
    with _user_errors(), open_client(settings) as client:
        yield settings, client


def _deliver(settings: Settings) -> str:
    with Notifier(settings.udp_server_url, settings.notify_trigger_token) as notifier:
        report = notifier.deliver(shared_engine(settings.database_url))
    if report.errors:
        return f"{report.pending} notifications pending (server: {report.errors[0]})"
    return f"{report.delivered} notifications delivered, {report.pending} pending"


@click.command("initial-sync")
@click.option("--force", is_flag=True, help="Run again even if it completed before.")
def initial_sync_command(force: bool) -> None:
    """Import the newest INITIAL_SYNC_LIMIT manga (notifies no one)."""
    with _session() as (settings, client):
        result = initial_sync(shared_engine(settings.database_url), client,
                              settings.initial_sync_limit, force=force,
                              content_ratings=settings.content_ratings)
    if result.skipped:
        click.echo(f"initial sync already completed (cursor {result.cursor}); use --force")
        return
    summary = result.catalogue.summary()
    click.echo(f"imported {summary['manga_seen']} manga ({summary['manga_inserted']} new) in "
               f"{client.stats.snapshot().total_requests} requests; cursor {result.cursor}")


def _check_days(first: date, last: date, partitions_start: date) -> None:
    """A day with no partition is a mistake, not something to spend requests on."""
    today = datetime.now(UTC).date()
    if last > today:
        raise click.ClickException(f"--to {last} is in the future (today is {today} UTC)")
    if first < partitions_start:
        raise click.ClickException(f"--from {first} is before the first partition "
                                   f"(MANGASYNC_PARTITIONS_START={partitions_start})")


@click.command("backfill")
@click.option("--from", "first", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="First day (UTC), YYYY-MM-DD.")
@click.option("--to", "last", type=click.DateTime(["%Y-%m-%d"]),
              help="Last day (UTC), inclusive; default: the first day.")
@click.option("--what", type=click.Choice(["catalogue", "chapters", "both"]), default="both",
              show_default=True)
def backfill(first: object, last: object | None, what: str) -> None:
    """Repair a range of days: manga created then, and chapters readable then."""
    start_day: date = first.date()  # type: ignore[attr-defined]
    end_day: date = last.date() if last else start_day  # type: ignore[attr-defined]
    if end_day < start_day:
        raise click.ClickException("--to is before --from")
    days = [start_day + timedelta(days=n) for n in range((end_day - start_day).days + 1)]
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # The bar shows the requests; a log line for each would break it up (-v keeps them).
        logging.getLogger("httpx").setLevel(logging.WARNING)
    manga_by_day: dict[str, int] = {}
    chapters_by_day: dict[str, int] = {}
    totals = {"manga": 0, "new_manga": 0, "chapters": 0, "notifications": 0}
    with _session() as (settings, client):
        _check_days(start_day, end_day, settings.partitions_start)  # before any request
        engine = shared_engine(settings.database_url)
        if what in ("catalogue", "both"):
            report = _backfill_catalogue(engine, client, days, settings.content_ratings)
            manga_by_day = dict(report.days)
            totals["manga"] += report.seen
            totals["new_manga"] += report.inserted
            totals["notifications"] += report.notifications
        if what in ("chapters", "both"):
            # The chapter sync reads day slices whatever its window: a call per day costs the
            # same requests and gives the bar and the counts their days.
            bar = tqdm(days, unit="day", desc="backfill chapters")
            for day in bar:
                start, end = day_bounds(day)
                chapters = sync_chapter_window(engine, client, settings.languages, start, end,
                                               lookback=settings.chapter_lookback,
                                               use_cursor=False)
                chapters_by_day[day.isoformat()] = chapters.stored
                totals["chapters"] += chapters.stored
                totals["notifications"] += chapters.notifications
                bar.set_postfix(requests=client.stats.snapshot().total_requests,
                                chapters=totals["chapters"])
    for line in _per_day_lines(days, manga_by_day if what != "chapters" else None,
                               chapters_by_day if what != "catalogue" else None):
        click.echo(line)
    click.echo(f"{len(days)} days: {totals['manga']} manga read ({totals['new_manga']} new), "
               f"{totals['chapters']} chapters stored, {totals['notifications']} notifications "
               f"queued, {client.stats.snapshot().total_requests} MangaDex requests "
               f"(content ratings {','.join(settings.content_ratings)}); " + _deliver(settings))


def _backfill_catalogue(engine: Engine, client: MangaDexClient, days: list[date],
                        ratings: Sequence[str]) -> CatalogueReport:
    """One keyset pass over the whole range (a request per 100 manga, not per day), with the
    bar advancing by the days the pass has read through."""
    first = day_bounds(days[0])[0]
    bar = tqdm(total=len(days), unit="day", desc="backfill catalogue")

    def advance(report: CatalogueReport, upto: datetime) -> None:
        bar.update(max(0, min(len(days), (upto - first).days) - bar.n))
        bar.set_postfix(requests=client.stats.snapshot().total_requests, manga=report.seen)

    try:
        report = import_created_range(engine, client, first, day_bounds(days[-1])[1],
                                      policy=SILENT, content_ratings=ratings, on_page=advance)
        bar.update(len(days) - bar.n)
    finally:
        bar.close()
    return report


def _per_day_lines(days: list[date], manga_by_day: dict[str, int] | None,
                   chapters_by_day: dict[str, int] | None) -> list[str]:
    """`day  manga  chapters` for every day of the range, the columns that were backfilled."""
    header = ["day".ljust(10)]
    if manga_by_day is not None:
        header.append(f"{'manga':>7}")
    if chapters_by_day is not None:
        header.append(f"{'chapters':>8}")
    lines = ["  ".join(header)]
    for day in days:
        key = day.isoformat()
        cells = [key]
        if manga_by_day is not None:
            cells.append(f"{manga_by_day.get(key, 0):>7}")
        if chapters_by_day is not None:
            cells.append(f"{chapters_by_day.get(key, 0):>8}")
        lines.append("  ".join(cells))
    return lines


@click.command("sync-manga")
@click.argument("manga_ref")
def sync_manga(manga_ref: str) -> None:
    """Re-read one manga (local id, slug or MangaDex UUID) and its whole feed."""
    settings = _settings()
    with _user_errors():
        found = sync_one_manga(settings, manga_ref)
    click.echo(json.dumps(found, indent=2, default=str))
