"""Daily UTC partitions from `MANGASYNC_PARTITIONS_START`, today included (end_offset=1)."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition

from mangasync_pipeline.config import Settings


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(
        start_date=settings.partitions_start.isoformat(), timezone="UTC", end_offset=1,
        fmt="%Y-%m-%d",
    )
