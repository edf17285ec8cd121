"""`mangahub_report`: a daily read of the MangaHub tables with pandas, published as tables in
the UI, with checks on what the notifications say."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DefaultScheduleStatus,
    Definitions,
    MaterializeResult,
    MetadataValue,
    ScheduleDefinition,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    define_asset_job,
    definitions,
)

from mangasync_pipeline.config import Settings, utcnow
from mangasync_pipeline.defs.assets import (
    GENRE_LINKS,
    MANGA_CATALOGUE,
    NEW_CHAPTERS,
    OWNERS,
    kinds,
)
from mangasync_pipeline.defs.resources import MangaHub
from mangasync_pipeline.defs.settings import current_settings

if TYPE_CHECKING:
    import pandas as pd

# pandas (and the report code that uses it) is imported by the report's own step only: every
# run loads this code location, and pandas would add about 45 MB to each run's process.

MANGAHUB_REPORT = AssetKey("mangahub_report")
NO_DUPLICATE_ANNOUNCEMENTS = "no_duplicate_announcements"
NOTIFICATIONS_POINT_AT_CHAPTERS = "notifications_point_at_chapters"
PREVIEW_ROWS = 50


def frame_table(frame: "pd.DataFrame", limit: int = PREVIEW_ROWS) -> MetadataValue:
    """A DataFrame as a table the UI renders (at most `limit` rows)."""
    import pandas as pd

    def kind(dtype: object) -> str:
        if pd.api.types.is_bool_dtype(dtype):
            return "bool"
        if pd.api.types.is_integer_dtype(dtype):
            return "int"
        if pd.api.types.is_float_dtype(dtype):
            return "float"
        return "string"

    schema = TableSchema(columns=[TableColumn(str(c), kind(frame[c].dtype))
                                  for c in frame.columns])
    shown = frame.head(limit).astype(object).where(frame.head(limit).notna(), None)
    return MetadataValue.table(
        records=[TableRecord({str(k): (v.item() if hasattr(v, "item") else v)
                              for k, v in row.items()})
                 for row in shown.to_dict(orient="records")],
        schema=schema)


def report_asset(settings: Settings) -> AssetsDefinition:
    """mangahub_report, its kind icons following the configured database."""
    return asset(
        key=MANGAHUB_REPORT,
        description="What MangaHub holds, for the operator: manga by status, content rating and "
                    "genre, chapters per language per day (30 days), notification latency, the "
                    "outbox, readers and follows. Read with pandas once a day; nothing is written.",
        group_name="reporting",
        kinds=kinds(settings, "pandas"),
        owners=OWNERS,
        tags={"domain": "reporting", "source": "mangahub"},
        deps=[MANGA_CATALOGUE, GENRE_LINKS, NEW_CHAPTERS],
        check_specs=[
            AssetCheckSpec(NO_DUPLICATE_ANNOUNCEMENTS, asset=MANGAHUB_REPORT,
                           description="No chapter number of a manga and language is announced "
                                       "twice (5 and 5.0 count as one)."),
            AssetCheckSpec(NOTIFICATIONS_POINT_AT_CHAPTERS, asset=MANGAHUB_REPORT,
                           description="Every NEW_CHAPTER notification names a chapter MangaHub "
                                       "stores."),
        ],
    )(mangahub_report)


def mangahub_report(context: AssetExecutionContext,
                    mangahub: MangaHub) -> Iterator[MaterializeResult | AssetCheckResult]:
    from mangasync_pipeline.db.report import build_report

    report = build_report(mangahub.engine(), utcnow())
    context.log.info(f"report: {report.manga_total} manga, {report.chapters_total} chapters, "
                     f"{len(report.duplicate_announcements)} duplicate announcements, "
                     f"{len(report.orphan_notifications)} notifications without a chapter")
    yield MaterializeResult(metadata={
        "manga": report.manga_total,
        "chapters": report.chapters_total,
        "manga_by_status": frame_table(report.manga_by_status),
        "manga_by_content_rating": frame_table(report.manga_by_content_rating),
        "manga_by_genre": frame_table(report.manga_by_genre),
        "chapters_per_language_per_day": frame_table(report.chapters_per_day, limit=31),
        "notification_latency": frame_table(report.latency),
        "outbox": frame_table(report.outbox),
        "readers_and_follows": frame_table(report.readers),
    })
    yield AssetCheckResult(
        check_name=NO_DUPLICATE_ANNOUNCEMENTS,
        passed=report.duplicate_announcements.empty,
        metadata={"duplicates": len(report.duplicate_announcements),
                  "examples": frame_table(report.duplicate_announcements, limit=10)})
    yield AssetCheckResult(
        check_name=NOTIFICATIONS_POINT_AT_CHAPTERS,
        passed=report.orphan_notifications.empty,
        metadata={"without_chapter": len(report.orphan_notifications),
                  "examples": frame_table(report.orphan_notifications, limit=10)})


mangahub_report_job = define_asset_job(
    "mangahub_report_job", selection=[MANGAHUB_REPORT],
    description="Builds mangahub_report (daily, and on demand).")

mangahub_report_schedule = ScheduleDefinition(
    name="mangahub_report_schedule", job=mangahub_report_job, cron_schedule="0 6 * * *",
    execution_timezone="UTC", default_status=DefaultScheduleStatus.RUNNING,
    description="The report once a day at 06:00 UTC.")


@definitions
def defs() -> Definitions:
    return Definitions(assets=[report_asset(current_settings())], jobs=[mangahub_report_job],
                       schedules=[mangahub_report_schedule])
