"""Freshness: a stalled sensor or schedule turns its asset red in the UI.

Each asset should be updated once per poll interval; at three intervals without an update
the check fails. The sensor below evaluates the checks (Dagster's own, no run needed).
"""

from dagster import (
    DefaultSensorStatus,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
)

from mangasync_pipeline.defs.assets import MANGA_CATALOGUE, NEW_CHAPTERS
from mangasync_pipeline.defs.settings import SETTINGS

STALE_AFTER_POLLS = 3

catalogue_freshness = build_last_update_freshness_checks(
    assets=[MANGA_CATALOGUE],
    lower_bound_delta=STALE_AFTER_POLLS * SETTINGS.new_manga_poll_interval)

chapters_freshness = build_last_update_freshness_checks(
    assets=[NEW_CHAPTERS],
    lower_bound_delta=STALE_AFTER_POLLS * SETTINGS.chapter_poll_interval)

freshness_checks_sensor = build_sensor_for_freshness_checks(
    freshness_checks=[*catalogue_freshness, *chapters_freshness],
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)
