"""Jobs: the asset jobs that sensors and schedules target, and three op jobs."""

from collections.abc import Iterator

from dagster import (
    AssetMaterialization,
    Config,
    MetadataValue,
    OpExecutionContext,
    Output,
    define_asset_job,
    in_process_executor,
    job,
    op,
)

from mangasync_pipeline.defs.assets import GENRE_LINKS, MANGA_CATALOGUE, NEW_CHAPTERS
from mangasync_pipeline.defs.failures import one_line_failures
from mangasync_pipeline.defs.partitions import partition_of
from mangasync_pipeline.defs.reporting import (
    RunMeter,
    delivery_metadata,
    figures,
    manga_preview,
    preview,
)
from mangasync_pipeline.defs.resources import MangaDex, MangaHub, Notify, SettingsParam
from mangasync_pipeline.defs.settings import MANGADEX_POOL, RUN_RETRY
from mangasync_pipeline.sync.catalogue import import_ids, initial_sync
from mangasync_pipeline.sync.catalogue_store import NotifyPolicy
from mangasync_pipeline.sync.manga_sync import OutsideRatings, refuse_requests, sync_one

# The tag naming the manual sync request a `sync_manga_job` run serves.
REQUEST_TAG = "mangasync/sync_request"

# One step and its checks: a subprocess per step would cost more than the steps themselves.
catalogue_job = define_asset_job(
    "catalogue_job", selection=[MANGA_CATALOGUE, GENRE_LINKS], executor_def=in_process_executor,
    description="Materializes manga_catalogue and genre_links partitions (sensor runs and "
                "backfills).")

new_chapters_job = define_asset_job(
    "new_chapters_job", selection=[NEW_CHAPTERS], executor_def=in_process_executor,
    description="Materializes new_chapters partitions (the schedule's runs and backfills).")


class InitialSyncConfig(Config):
    force: bool = False


@op(pool=MANGADEX_POOL, retry_policy=RUN_RETRY)
def import_newest_manga(context: OpExecutionContext, config: InitialSyncConfig,
                        mangahub: MangaHub, mangadex: MangaDex,
                        settings: SettingsParam) -> Iterator[AssetMaterialization | Output]:
    """Imports the newest INITIAL_SYNC_LIMIT manga once; `force` runs it again."""
    engine, client = mangahub.engine(), mangadex.client()
    meter = RunMeter(engine, client, "initial_sync")
    with one_line_failures("initial sync"):
        result = initial_sync(engine, client, settings.initial_sync_limit,
                              force=config.force, content_ratings=settings.content_ratings)
    report = result.catalogue
    requests = meter.finish({"manga_synced": report.seen})
    if result.skipped:
        context.log.info("initial sync already completed; run with force: true to repeat it")
        yield Output(None, metadata={"skipped": True, "cursor": str(result.cursor)})
        return
    # Record what it wrote as materializations of the catalogue partitions it touched, but
    # not its oldest day: that one holds only the part that fit in the limit, and a UI backfill
    # of missing partitions should still fill it.
    # Both catalogue assets: the import wrote each day's manga and their genre links together,
    # so "materialize missing" finds the same days missing for both.
    for day, count in sorted(report.days.items())[1:]:
        yield AssetMaterialization(asset_key=MANGA_CATALOGUE, partition=day,
                                   metadata={"manga_imported": count,
                                             "source": "initial_sync_job"})
        yield AssetMaterialization(asset_key=GENRE_LINKS, partition=day,
                                   metadata={"manga_imported": count,
                                             "source": "initial_sync_job"})
    yield Output(None, metadata={
        **report.summary(), **requests, "cursor": str(result.cursor),
        "partitions_written": len(report.days), "preview": manga_preview(report.changes),
    })


@job(executor_def=in_process_executor,
     description="Imports the newest INITIAL_SYNC_LIMIT manga (order[createdAt]=desc, 100 per "
                 "request). Runs once; run config {ops: {import_newest_manga: {config: "
                 "{force: true}}}} repeats it. Notifies no one.")
def initial_sync_job() -> None:
    import_newest_manga()


class SyncMangaConfig(Config):
    mangadex_id: str


@op(pool=MANGADEX_POOL)
def sync_one_manga(context: OpExecutionContext, config: SyncMangaConfig,
                   mangahub: MangaHub, mangadex: MangaDex, notifier: Notify,
                   settings: SettingsParam) -> Iterator[AssetMaterialization | Output]:
    engine, client = mangahub.engine(), mangadex.client()
    with one_line_failures(f"sync of manga {config.mangadex_id}"):
        try:
            found = sync_one(engine, client, config.mangadex_id.strip().lower(),
                             settings.languages, settings.content_ratings)
        except OutsideRatings as exc:
            # Not a failure of the run: the operator's setting says no. The caller of the
            # HTTP route reads the reason on its request.
            request = context.run.tags.get(REQUEST_TAG)
            refuse_requests(engine, [int(request)] if request else [], str(exc))
            context.log.warning(str(exc))
            yield Output(None, metadata={"refused": str(exc)})
            return
    delivery = notifier.deliver(engine)
    context.log.info(f"manga {found['manga_id']} ({config.mangadex_id}, {found['title']}): "
                     f"{figures(found, skip=('manga_id', 'mangadex_id', 'slug', 'title'))}")
    # What it wrote, on the asset graph: the manga's catalogue partition (with its genre
    # links) and the new_chapters partitions its chapters landed in.
    source = {"source": "sync_manga_job", "mangadex_id": found["mangadex_id"]}
    day = partition_of(found["catalogue_day"], settings)
    for key in (MANGA_CATALOGUE, GENRE_LINKS):
        yield AssetMaterialization(asset_key=key, partition=day,
                                   metadata={**source, "catalogue": found["catalogue"]})
    for chapter_day, stored in found["chapter_days"].items():
        yield AssetMaterialization(asset_key=NEW_CHAPTERS,
                                   partition=partition_of(chapter_day, settings),
                                   metadata={**source, "chapters_stored": stored})
    yield Output(None, metadata={
        **{k: v for k, v in found.items() if k not in ("new_chapters", "chapter_days")},
        "new_chapters": preview(found["new_chapters"], column="new chapter"),
        "report": MetadataValue.json(found), **delivery_metadata(delivery),
    })


@job(executor_def=in_process_executor,
     description="Re-reads one manga and its whole feed; run config "
                 "{ops: {sync_one_manga: {config: {mangadex_id: <uuid>}}}}.")
def sync_manga_job() -> None:
    sync_one_manga()


@op
def deliver_outbox(context: OpExecutionContext, mangahub: MangaHub,
                   notifier: Notify) -> Output:
    report = notifier.deliver(mangahub.engine())
    if report.errors:
        context.log.warning(f"notification server not reachable: {report.errors[0]}")
    return Output(None, metadata={**delivery_metadata(report),
                                  "next_attempt_at": str(report.waiting_until or "")})


@job(executor_def=in_process_executor,
     description="Hands pending outbox notifications to the notification server, in order.")
def deliver_notifications_job() -> None:
    deliver_outbox()


class RefreshMangaConfig(Config):
    mangadex_ids: list[str]


@op(pool=MANGADEX_POOL, retry_policy=RUN_RETRY)
def refresh_manga(context: OpExecutionContext, config: RefreshMangaConfig,
                  mangahub: MangaHub, mangadex: MangaDex, notifier: Notify,
                  settings: SettingsParam) -> Iterator[AssetMaterialization | Output]:
    """Re-reads changed catalogued manga (100 per request); status or title changes notify."""
    engine, client = mangahub.engine(), mangadex.client()
    meter = RunMeter(engine, client, "refresh_manga")
    with one_line_failures(f"refresh of {len(config.mangadex_ids)} manga"):
        report = import_ids(engine, client, config.mangadex_ids,
                            policy=NotifyPolicy(new_manga=False, updates=True))
    delivery = notifier.deliver(engine)
    summary = report.summary()
    requests = meter.finish({"manga_synced": summary["manga_updated"]})
    context.log.info(f"refreshed {len(config.mangadex_ids)} manga: {figures(summary)}; "
                     f"{requests['mangadex_requests']} MangaDex requests")
    # The catalogue partitions (manga and their genre links) it rewrote, on the asset graph.
    for day, updated in sorted(report.updated_days.items()):
        for key in (MANGA_CATALOGUE, GENRE_LINKS):
            yield AssetMaterialization(
                asset_key=key, partition=partition_of(day, settings),
                metadata={"manga_updated": updated, "source": "refresh_manga_job"})
    yield Output(None, metadata={**summary, **requests, **delivery_metadata(delivery),
                                 "preview": manga_preview(report.changes)})


@job(executor_def=in_process_executor,
     description="Re-reads catalogued manga that changed on MangaDex (requested by "
                 "new_manga_sensor); a status or title change notifies MANGA_UPDATE.")
def refresh_manga_job() -> None:
    refresh_manga()

