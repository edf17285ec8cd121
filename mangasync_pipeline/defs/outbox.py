"""The notification outbox on the asset graph: what the syncs queued for readers and the
notifier hands to the server. Its checks run every 15 minutes on their own, because a server
that stopped taking notifications shows in the outbox, not in the next catalogue run (which
in a quiet hour never comes)."""

from __future__ import annotations

from datetime import timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    AssetSpec,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    asset_check,
    define_asset_job,
    definitions,
)

from mangasync_pipeline.config import Settings, utcnow
from mangasync_pipeline.defs.assets import MANGA_CATALOGUE, NEW_CHAPTERS, OWNERS, kinds
from mangasync_pipeline.defs.reporting import table
from mangasync_pipeline.defs.resources import MangaHub
from mangasync_pipeline.defs.settings import current_settings
from mangasync_pipeline.sync import outbox

NOTIFICATION_OUTBOX = AssetKey("notification_outbox")



def outbox_spec(settings: Settings) -> AssetSpec:
    return AssetSpec(
        NOTIFICATION_OUTBOX, deps=[MANGA_CATALOGUE, NEW_CHAPTERS], group_name="notifications",
        kinds=kinds(settings), owners=OWNERS,
        description="Notifications queued by the catalogue and chapter syncs (table "
                    "notification_outbox), delivered to the notification server by each run "
                    "and by notification_outbox_sensor.")


@asset_check(asset=NOTIFICATION_OUTBOX, description="No notification waits in the outbox "
             "for more than an hour (is the notification server up?).")
def notification_outbox_backlog(mangahub: MangaHub) -> AssetCheckResult:
    with mangahub.engine().connect() as conn:
        backlog = outbox.backlog(conn)
    age = backlog.oldest_age_seconds(utcnow())
    return AssetCheckResult(
        passed=age <= timedelta(hours=1).total_seconds(),
        severity=AssetCheckSeverity.WARN,
        metadata={"pending": backlog.pending, "oldest_pending_age_seconds": round(age)},
    )


@asset_check(asset=NOTIFICATION_OUTBOX, description="The notification server refused no "
             "notification for good (a refused one is never delivered: see its last_error "
             "in notification_outbox).")
def no_refused_notifications(mangahub: MangaHub) -> AssetCheckResult:
    with mangahub.engine().connect() as conn:
        refused = outbox.refused(conn, 10)
        n = outbox.refused_count(conn)
    return AssetCheckResult(passed=n == 0, metadata={
        "refused": n, "latest": table(
            [{"dedup_key": e.dedup_key, "reason": e.last_error} for e in refused],
            {"dedup_key": "string", "reason": "string"})})


outbox_checks_job = define_asset_job(
    "outbox_checks_job", selection=AssetSelection.checks_for_assets(NOTIFICATION_OUTBOX),
    description="Evaluates the outbox's checks (no MangaDex request).")

outbox_checks_schedule = ScheduleDefinition(
    name="outbox_checks_schedule", job=outbox_checks_job, cron_schedule="*/15 * * * *",
    execution_timezone="UTC", default_status=DefaultScheduleStatus.RUNNING)


@definitions
def defs() -> Definitions:
    # A module with a @definitions function contributes only what the function returns.
    return Definitions(assets=[outbox_spec(current_settings())],
                       asset_checks=[notification_outbox_backlog, no_refused_notifications],
                       jobs=[outbox_checks_job], schedules=[outbox_checks_schedule])
