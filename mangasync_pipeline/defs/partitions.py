"""Daily UTC partitions from `MANGASYNC_PARTITIONS_START`, today included (end_offset=1)."""

from __future__ import annotations

from datetime import date

from dagster import DailyPartitionsDefinition

from mangasync_pipeline.config import Settings


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(
        start_date=settings.partitions_start.isoformat(), timezone="UTC", end_offset=1,
        fmt="%Y-%m-%d",
    )


def partition_of(day: str, settings: Settings) -> str:
    """The daily partition that holds `day`: days before the first partition count under it
    (as the sensors file old manga), so a write outside the range still shows on the graph."""
    return max(date.fromisoformat(day), settings.partitions_start).isoformat()
