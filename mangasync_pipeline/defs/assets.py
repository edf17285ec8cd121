"""The three software-defined assets. Each is a thin wrapper over `sync/`.

Every partition of a run gets its own figures (`add_asset_metadata(partition_key=...)`); what
only exists for the run as a whole (requests, deliveries) is labelled a range total when the
run spans several partitions.
"""

from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import date, datetime

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Config,
    Definitions,
    MaterializeResult,
    asset,
    definitions,
    multi_asset,
)
from sqlalchemy import Engine

from mangasync_pipeline.config import Settings
from mangasync_pipeline.db import tables
from mangasync_pipeline.defs.failures import one_line_failures, partition_label
from mangasync_pipeline.defs.partitions import daily_partitions
from mangasync_pipeline.defs.reporting import (
    RunMeter,
    delivery_metadata,
    figures,
    manga_preview,
    preview,
    run_scope,
    table_metadata,
)
from mangasync_pipeline.defs.resources import (
    MangaDex,
    MangaDexResource,
    MangaHub,
    MangaHubDatabase,
    NotifierResource,
    Notify,
    SettingsParam,
)
from mangasync_pipeline.defs.settings import MANGADEX_POOL, RUN_RETRY, current_settings
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.sync import quarantine
from mangasync_pipeline.sync.catalogue import (
    SILENT,
    day_bounds,
    import_created_range,
    import_ids,
    initial_sync_cursor,
)
from mangasync_pipeline.sync.catalogue_store import NotifyPolicy
from mangasync_pipeline.sync.chapters import ChapterReport, sync_chapter_window
from mangasync_pipeline.sync.partition_days import (
    relink_genres_created,
    rows_per_day,
)

MANGA_CATALOGUE = AssetKey("manga_catalogue")
GENRE_LINKS = AssetKey("genre_links")
NEW_CHAPTERS = AssetKey("new_chapters")

# A backfill of the catalogue runs at most this many day partitions per run: one keyset pass
# each (a whole-MangaDex mirror of 3,242 days costs 4 runs and 3 requests more than one pass),
# while a run's memory, which grows with the partitions it records, stays under 150 MB.
CATALOGUE_RUN_PARTITIONS = 1000

OWNERS = ["team:mangasync"]


def kinds(settings: Settings, *others: str) -> set[str]:
    """The UI's kind icons: the database the assets live in (the configured URL decides)."""
    return {*others, MangaHubDatabase(settings.database_url).backend}



class NewChaptersConfig(Config):
    """How a `new_chapters` run reads MangaDex. The schedule sets `from_cursor`; a manual run,
    a re-execution or a backfill leaves it false and reads whole partitions."""

    from_cursor: bool = False
    # Set by new_chapters_sensor: read the partition from this instant (ISO 8601) only.
    since: str = ""


class CatalogueConfig(Config):
    """Empty for a partition or a backfill; the new-manga sensor names the manga it found."""

    mangadex_ids: list[str] = []
    notify_new_manga: bool = False


def _per_partition(context: AssetExecutionContext, key: AssetKey, keys: list[str],
                   figures: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Each partition's own figures. For one partition they are returned, to head the
    materialization's metadata; for a range each partition's event gets its own."""
    own = [{name: int(by_day.get(partition, 0)) for name, by_day in figures.items()}
           for partition in keys]
    if len(keys) == 1:
        return own[0]
    for partition, metadata in zip(keys, own, strict=True):
        context.add_asset_metadata(metadata, asset_key=key, partition_key=partition)
    return {}


def _by_partition(keys: list[str], by_day: Mapping[str, int], total: int) -> Counter[str]:
    """Counts per partition; a single-partition run owns all of them (the sensor files manga
    older than the first partition under it)."""
    if len(keys) == 1:
        return Counter({keys[0]: total})
    return Counter(dict(by_day))


def catalogue_assets(settings: Settings) -> AssetsDefinition:
    """manga_catalogue and genre_links, one step, partitioned from MANGASYNC_PARTITIONS_START."""
    kind_icons = kinds(settings, "mangadex")
    return multi_asset(
        specs=[
            AssetSpec(MANGA_CATALOGUE, description="MangaDex manga in MangaHub's `manga` table, "
                      "partitioned by the day they were created on MangaDex (UTC). Written with "
                      "their genre links, in one transaction per page.",
                      group_name="catalogue", kinds=kind_icons, owners=OWNERS,
                      tags={"domain": "catalogue", "source": "mangadex"},
                      metadata=table_metadata(tables.manga), skippable=True),
            AssetSpec(GENRE_LINKS, deps=[MANGA_CATALOGUE], description="`genres` and "
                      "`manga_genres` of the partition's manga. Materialized alone, it re-reads "
                      "those manga from MangaDex (100 per request) and rebuilds only their links.",
                      group_name="catalogue", kinds=kind_icons, owners=OWNERS,
                      tags={"domain": "catalogue", "source": "mangadex"},
                      metadata=table_metadata(tables.manga_genres), skippable=True),
        ],
        name="catalogue",
        partitions_def=daily_partitions(settings),
        # Either asset alone, from the UI, GraphQL or `materialize(..., selection=...)`.
        can_subset=True,
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=CATALOGUE_RUN_PARTITIONS),
        retry_policy=RUN_RETRY,
        pool=MANGADEX_POOL,
    )(catalogue)


def catalogue(context: AssetExecutionContext, config: CatalogueConfig, mangahub: MangaHub,
              mangadex: MangaDex, notifier: Notify,
              settings: SettingsParam) -> Iterator[MaterializeResult | AssetMaterialization]:
    # Everything the step does fails in one line, and only a transient failure is retried: a
    # bug in reporting must not hold a run slot through the RetryPolicy's waits.
    with one_line_failures(f"catalogue {partition_label(context)}"):
        yield from _catalogue(context, config, mangahub, mangadex, notifier, settings)


def _catalogue(context: AssetExecutionContext, config: CatalogueConfig,
               mangahub: MangaHubDatabase, mangadex: MangaDexResource,
               notifier: NotifierResource,
               settings: Settings) -> Iterator[MaterializeResult | AssetMaterialization]:
    engine, client = mangahub.engine(), mangadex.client()
    keys = list(context.partition_keys)
    window = context.partition_time_window
    selected = context.selected_asset_keys
    meter = RunMeter(engine, client, "catalogue")
    if MANGA_CATALOGUE not in selected:
        context.log.info(f"rebuilding the genre links of manga created in "
                         f"[{window.start}, {window.end})")
        yield _genre_links_alone(context, engine, client, keys, config.mangadex_ids, meter)
        return
    with one_line_failures(f"catalogue {partition_label(context)}"):
        if config.mangadex_ids:
            policy = NotifyPolicy(new_manga=config.notify_new_manga,
                                  new_manga_after=initial_sync_cursor(engine), updates=True)
            context.log.info(f"re-reading {len(config.mangadex_ids)} manga named by the sensor")
            report = import_ids(engine, client, config.mangadex_ids, policy=policy)
        else:
            context.log.info(f"importing manga created in [{window.start}, {window.end})")
            report = import_created_range(engine, client, window.start, window.end,
                                          policy=SILENT, progress=context.log.info,
                                          content_ratings=settings.content_ratings)
    delivery = notifier.deliver(engine)
    summary = report.summary()
    requests = meter.finish({"manga_synced": summary["manga_inserted"] + summary["manga_updated"]})
    context.log.info(f"catalogue {partition_label(context)}: {figures(summary)}; "
                     f"{requests['mangadex_requests']} MangaDex requests")
    rows = rows_per_day(engine, window.start, window.end)
    own = _per_partition(context, MANGA_CATALOGUE, keys, {
        "manga_seen": _by_partition(keys, report.days, report.seen),
        "manga_inserted": _by_partition(keys, report.inserted_days, report.inserted),
        "manga_updated": _by_partition(keys, report.updated_days, report.updated),
        "dagster/row_count": rows["manga"]})
    yield MaterializeResult(asset_key=MANGA_CATALOGUE, metadata={**own, **run_scope(keys, {
        **{k: v for k, v in summary.items() if k.startswith(("items_", "pages"))},
        "notifications_queued": summary["notifications_queued"], **requests,
        **delivery_metadata(delivery), "preview": manga_preview(report.changes),
        "content_ratings": ", ".join(settings.content_ratings),
        "quarantined_records": _quarantined(engine, quarantine.MANGA),
    })})
    links = {"genre_links_added": summary["genre_links_added"],
             "genre_links_removed": summary["genre_links_removed"],
             "genres_created": summary["genres_created"]}
    if GENRE_LINKS in selected:
        own = _per_partition(context, GENRE_LINKS, keys,
                             {"dagster/row_count": rows["genre_links"]})
        yield MaterializeResult(asset_key=GENRE_LINKS,
                                metadata={**run_scope(keys, links), **own})
    else:
        # Manga are written with their genre links in one transaction: materialized alone,
        # the catalogue still wrote those partitions' links, and the graph says so.
        for key in keys:
            yield AssetMaterialization(asset_key=GENRE_LINKS, partition=key, metadata={
                **run_scope(keys, links), "source": "manga_catalogue, materialized alone"})


def _genre_links_alone(context: AssetExecutionContext, engine: Engine, client: MangaDexClient,
                       keys: list[str], mangadex_ids: list[str],
                       meter: RunMeter) -> MaterializeResult:
    added: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    created = 0
    for partition in keys:
        start, end = day_bounds(date.fromisoformat(partition))
        with one_line_failures(f"genre_links {partition}"):
            result = relink_genres_created(engine, client, start, end, mangadex_ids)
        added[partition], removed[partition] = result.genre_links_added, result.genre_links_removed
        created += result.genres_created
    window = context.partition_time_window
    rows = rows_per_day(engine, window.start, window.end)
    own = _per_partition(context, GENRE_LINKS, keys, {
        "genre_links_added": added, "genre_links_removed": removed,
        "dagster/row_count": rows["genre_links"]})
    requests = meter.finish({})
    return MaterializeResult(asset_key=GENRE_LINKS, metadata={**own, **run_scope(keys, {
        "genres_created": created, **requests,
        "read": "the partition's catalogued manga, re-read by id (links only)"})})


def new_chapters_asset(settings: Settings) -> AssetsDefinition:
    """new_chapters, partitioned from MANGASYNC_PARTITIONS_START."""
    return asset(
        key=NEW_CHAPTERS,
        description="Chapters of catalogued manga in MangaHub's `chapters` table, partitioned by "
                    "the day they became readable (readableAt, UTC). Queues NEW_CHAPTER "
                    "notifications by the rules of CONTRACTS.md.",
        group_name="chapters",
        kinds=kinds(settings, "mangadex"),
        owners=OWNERS,
        tags={"domain": "chapters", "source": "mangadex"},
        metadata=table_metadata(tables.chapters),
        # A chapter of any day may belong to a manga created on any day: the whole catalogue is
        # upstream. The edge is lineage only; nothing waits on it, so a poll is never held up.
        deps=[AssetDep(MANGA_CATALOGUE, partition_mapping=AllPartitionMapping())],
        partitions_def=daily_partitions(settings),
        backfill_policy=BackfillPolicy.single_run(),
        retry_policy=RUN_RETRY,
        pool=MANGADEX_POOL,
    )(new_chapters)


def new_chapters(context: AssetExecutionContext, config: NewChaptersConfig, mangahub: MangaHub,
                 mangadex: MangaDex, notifier: Notify,
                 settings: SettingsParam) -> MaterializeResult:
    with one_line_failures(f"new_chapters {partition_label(context)}"):
        return _new_chapters(context, config, mangahub, mangadex, notifier, settings)


def _new_chapters(context: AssetExecutionContext, config: NewChaptersConfig,
                  mangahub: MangaHubDatabase, mangadex: MangaDexResource,
                  notifier: NotifierResource, settings: Settings) -> MaterializeResult:
    engine, client = mangahub.engine(), mangadex.client()
    meter = RunMeter(engine, client, "new_chapters")
    keys = list(context.partition_keys)
    # The schedule's polls resume at the cursor (run config it sets, visible in the Launchpad);
    # backfills, manual runs and re-executions of a manual run read whole days.
    # The chapter sensor names where its window starts; the schedule reads from the cursor.
    since = datetime.fromisoformat(config.since) if config.since else None
    scheduled = config.from_cursor and since is None
    total = ChapterReport()
    per_day: dict[str, Counter[str]] = {}
    # Day by day: the sync reads a day per slice anyway, so this costs no extra request and
    # each partition's figures are its own.
    for partition in keys:
        start, end = day_bounds(date.fromisoformat(partition))
        if since is not None:
            start = min(max(start, since), end)
        with one_line_failures(f"new_chapters {partition}"):
            report = sync_chapter_window(engine, client, settings.languages, start,
                                         end, lookback=settings.chapter_lookback,
                                         use_cursor=scheduled)
        for name, value in report.summary().items():
            per_day.setdefault(name, Counter())[partition] = value
        total.add(report)
    delivery = notifier.deliver(engine)
    requests = meter.finish({"chapters_synced": total.stored})
    window = context.partition_time_window
    per_day["dagster/row_count"] = rows_per_day(engine, window.start, window.end)["chapters"]
    own = _per_partition(context, NEW_CHAPTERS, keys, per_day)
    context.log.info(f"new_chapters {partition_label(context)}: {figures(total.summary())}; "
                     f"{requests['mangadex_requests']} MangaDex requests")
    totals = total.summary() if len(keys) > 1 else {}
    return MaterializeResult(metadata={**own, **run_scope(keys, {
        **totals, **requests, **delivery_metadata(delivery),
        "quarantined_records": _quarantined(engine, quarantine.CHAPTER),
        "read": (f"from {since.isoformat()} (chapter sensor)" if since else
                 "from the cursor (scheduled poll)" if scheduled else "whole partitions"),
        "new_chapter_numbers": preview(total.new_numbers, column="new chapter"),
    })})


def _quarantined(engine: Engine, source: str) -> int:
    """Records of `source` in quarantine now (this run's new ones are `items_quarantined`)."""
    with engine.connect() as conn:
        return quarantine.counts(conn).get(source, 0)


@definitions
def defs() -> Definitions:
    settings = current_settings()
    return Definitions(assets=[catalogue_assets(settings), new_chapters_asset(settings)])
