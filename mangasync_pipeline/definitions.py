"""The one `Definitions` of mangasync (the code location `mangasync`: workspace.yaml, `dg`).

Everything Dagster shows lives in `defs/` and is found by `load_from_defs_folder`, so a new
module there (an asset, a sensor) is loaded without being listed anywhere; this module only
binds resources and the executor.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions, definitions, in_process_executor, load_from_defs_folder

from mangasync_pipeline.config import Settings
from mangasync_pipeline.defs.resources import build_resources

LOCATION_NAME = "mangasync"


def build_definitions(settings: Settings) -> Definitions:
    """The definitions bound to `settings` (tests point them at their own database and
    MangaDex simulator)."""
    return Definitions.merge(
        load_from_defs_folder(path_within_project=Path(__file__).parent),
        # A UI "Materialize" and a backfill run the implicit asset job: in one process, as
        # the named jobs do, instead of a subprocess per step that costs more than the step.
        Definitions(resources=build_resources(settings), executor=in_process_executor),
    )


@definitions
def defs() -> Definitions:
    from mangasync_pipeline.defs.settings import SETTINGS

    return build_definitions(SETTINGS)
