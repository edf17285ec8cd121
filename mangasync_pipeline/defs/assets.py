"""The three software-defined assets. Each is a thin wrapper over `sync/`."""

from collections.abc import Iterator
from datetime import datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    Config,
    MaterializeResult,
    asset,
    multi_asset,
)

from mangasync_pipeline.defs.failures import one_line_failures
from mangasync_pipeline.defs.reporting import RunMeter, delivery_metadata, preview
from mangasync_pipeline.defs.resources import (
    MangaDexResource,
    MangaHubDatabase,
    NotifierResource,
    SyncSettings,
)
from mangasync_pipeline.defs.settings import DAILY, MANGADEX_POOL, RUN_RETRY
from mangasync_pipeline.sync.catalogue import (
    SILENT,
    import_created_range,
    import_ids,
    initial_sync_cursor,
)
from mangasync_pipeline.sync.catalogue_store import NotifyPolicy
from mangasync_pipeline.sync.chapters import sync_chapter_window

MANGA_CATALOGUE = AssetKey("manga_catalogue")
GENRE_LINKS = AssetKey("genre_links")
NEW_CHAPTERS = AssetKey("new_chapters")


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


@multi_asset(
    specs=[
        AssetSpec(MANGA_CATALOGUE, description="MangaDex manga in MangaHub's `manga` table, "
                  "partitioned by the day they were created on MangaDex (UTC).",
                  group_name="catalogue", kinds={"sql"}),
        AssetSpec(GENRE_LINKS, deps=[MANGA_CATALOGUE], description="`genres` and "
                  "`manga_genres`, written in the same transaction as the manga.",
                  group_name="catalogue", kinds={"sql"}),
    ],
    name="catalogue",
    partitions_def=DAILY,
    backfill_policy=BackfillPolicy.single_run(),
    retry_policy=RUN_RETRY,
    pool=MANGADEX_POOL,
)
def catalogue(context: AssetExecutionContext, config: CatalogueConfig,
              mangahub: MangaHubDatabase, mangadex: MangaDexResource,
              notifier: NotifierResource,
              sync_settings: SyncSettings) -> Iterator[MaterializeResult]:
    engine, client = mangahub.engine(), mangadex.client()
    meter = RunMeter(engine, client, "catalogue")
    window = context.partition_time_window
    with one_line_failures(f"catalogue {context.partition_key_range}"):
        if config.mangadex_ids:
            policy = NotifyPolicy(new_manga=config.notify_new_manga,
                                  new_manga_after=initial_sync_cursor(engine), updates=True)
            context.log.info(f"re-reading {len(config.mangadex_ids)} manga named by the sensor")
            report = import_ids(engine, client, config.mangadex_ids, policy=policy)
        else:
            context.log.info(f"importing manga created in [{window.start}, {window.end})")
            report = import_created_range(engine, client, window.start, window.end,
                                          policy=SILENT, progress=context.log.info,
                                          content_ratings=sync_settings.rating_list)
    delivery = notifier.deliver(engine)
    summary = report.summary()
    requests = meter.finish({"manga_synced": summary["manga_inserted"] + summary["manga_updated"]})
    context.log.info(f"catalogue: {summary}; {requests['mangadex_requests']} requests")
    yield MaterializeResult(asset_key=MANGA_CATALOGUE, metadata={
        **{k: v for k, v in summary.items() if k.startswith(("manga_", "items_", "pages"))},
        "notifications_queued": summary["notifications_queued"], **requests,
        **delivery_metadata(delivery), "preview": preview(report.preview()),
        "content_ratings": ", ".join(sync_settings.rating_list),
    })
    yield MaterializeResult(asset_key=GENRE_LINKS, metadata={
        "genre_links_added": summary["genre_links_added"],
        "genre_links_removed": summary["genre_links_removed"],
        "genres_created": summary["genres_created"],
    })


@asset(
    key=NEW_CHAPTERS,
    description="Chapters of catalogued manga in MangaHub's `chapters` table, partitioned by "
                "the day they became readable (readableAt, UTC). Queues NEW_CHAPTER "
                "notifications by the rules of CONTRACTS.md.",
    group_name="chapters",
    kinds={"sql"},
    partitions_def=DAILY,
    backfill_policy=BackfillPolicy.single_run(),
    retry_policy=RUN_RETRY,
    pool=MANGADEX_POOL,
)
def new_chapters(context: AssetExecutionContext, config: NewChaptersConfig,
                 mangahub: MangaHubDatabase,
                 mangadex: MangaDexResource, notifier: NotifierResource,
                 sync_settings: SyncSettings) -> MaterializeResult:
    engine, client = mangahub.engine(), mangadex.client()
    meter = RunMeter(engine, client, "new_chapters")
    window = context.partition_time_window
    # The schedule's polls resume at the cursor (run config it sets, visible in the Launchpad);
    # backfills, manual runs and re-executions of a manual run read whole days.
    scheduled = config.from_cursor and not config.since
    start = max(window.start, datetime.fromisoformat(config.since)) if config.since \
        else window.start
    with one_line_failures(f"new_chapters {context.partition_key_range}"):
        report = sync_chapter_window(engine, client, sync_settings.language_list, start,
                                     window.end, lookback=sync_settings.lookback,
                                     use_cursor=scheduled)
    delivery = notifier.deliver(engine)
    summary = report.summary()
    requests = meter.finish({"chapters_synced": summary["chapters_stored"]})
    context.log.info(f"new_chapters: {summary}; {requests['mangadex_requests']} requests")
    return MaterializeResult(metadata={
        **summary, **requests, **delivery_metadata(delivery),
        "read": (f"from {start.isoformat()} (chapter sensor)" if config.since else
                 "from the cursor (scheduled poll)" if scheduled else "whole partitions"),
        "new_chapter_numbers": preview(report.new_numbers),
    })
