"""Freshness: a stalled sensor or schedule turns its asset red in the UI.

Each asset should be updated once per poll interval; at three intervals without an update
the check fails. The sensor below evaluates the checks (Dagster's own, no run needed).
"""

from dagster import (
    DefaultSensorStatus,
    Definitions,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
    definitions,
)

from mangasync_pipeline.config import Settings
from mangasync_pipeline.defs.assets import MANGA_CATALOGUE, NEW_CHAPTERS
from mangasync_pipeline.defs.settings import current_settings

STALE_AFTER_POLLS = 3


def freshness(settings: Settings) -> Definitions:
    """The checks, at three of NEW_MANGA_POLL_INTERVAL and CHAPTER_POLL_INTERVAL, and the
    sensor that evaluates them."""
    checks = [
        *build_last_update_freshness_checks(
            assets=[MANGA_CATALOGUE],
            lower_bound_delta=STALE_AFTER_POLLS * settings.new_manga_poll_interval),
        *build_last_update_freshness_checks(
            assets=[NEW_CHAPTERS],
            lower_bound_delta=STALE_AFTER_POLLS * settings.chapter_poll_interval),
    ]
    sensor = build_sensor_for_freshness_checks(
        freshness_checks=checks, default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60)
    return Definitions(asset_checks=checks, sensors=[sensor])


@definitions
def defs() -> Definitions:
    return freshness(current_settings())
