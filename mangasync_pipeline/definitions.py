"""The one `Definitions` of mangasync (loaded by workspace.yaml and `dg`)."""

from __future__ import annotations

from dagster import Definitions

from mangasync_pipeline.config import Settings
from mangasync_pipeline.defs.assets import catalogue, new_chapters
from mangasync_pipeline.defs.chapter_sensor import new_chapters_sensor
from mangasync_pipeline.defs.checks import CHECKS
from mangasync_pipeline.defs.jobs import JOBS
from mangasync_pipeline.defs.resources import build_resources
from mangasync_pipeline.defs.schedules import SCHEDULES
from mangasync_pipeline.defs.sensors import SENSORS
from mangasync_pipeline.defs.settings import SETTINGS


def build_definitions(settings: Settings) -> Definitions:
    """The definitions with resources for `settings` (tests point them elsewhere)."""
    return Definitions(
        assets=[catalogue, new_chapters],
        asset_checks=CHECKS,
        jobs=JOBS,
        sensors=[*SENSORS, new_chapters_sensor],
        schedules=SCHEDULES,
        resources=build_resources(settings),
    )


defs = build_definitions(SETTINGS)
