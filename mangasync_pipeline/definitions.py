"""The one `Definitions` of mangasync (the code location `mangasync`: workspace.yaml, `dg`).

Everything Dagster shows lives in `defs/` and is found by `load_from_defs_folder`, so a new
module there (an asset, a sensor) is loaded without being listed anywhere. Modules whose
definitions follow the settings (partitions, crons, sensor intervals, freshness bounds, run
tags, the database's kind) build them in a `@definitions` function from the settings given to
`build_definitions`; this module adds the resources and the executor.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from dagster import (
    BetaWarning,
    Definitions,
    definitions,
    in_process_executor,
    load_from_defs_folder,
)

from mangasync_pipeline.config import Settings
from mangasync_pipeline.defs.resources import resource_definitions
from mangasync_pipeline.defs.settings import building

LOCATION_NAME = "mangasync"

# Dagster copies a sensor when it binds resources to the sensor's jobs, passing the sensor's
# (empty) owners on, and that copy warns that `owners` is in beta although no sensor of ours
# sets it. Every code server and run worker loads these definitions, so unfiltered the warning
# repeats in the daemon's log once per run.
warnings.filterwarnings("ignore", category=BetaWarning,
                        message=r"Parameter `owners` of initializer `SensorDefinition")


def build_definitions(settings: Settings) -> Definitions:
    """Everything bound to `settings` (tests build several, each with its own database and
    MangaDex simulator, in one process)."""
    with building(settings):
        folder = load_from_defs_folder(path_within_project=Path(__file__).parent)
    return Definitions.merge(
        folder,
        # A UI "Materialize" and a backfill run the implicit asset job: in one process, as
        # the named jobs do, instead of a subprocess per step that costs more than the step.
        Definitions(resources=resource_definitions(settings), executor=in_process_executor),
    )


@definitions
def defs() -> Definitions:
    # The environment is read here, once, when Dagster loads the code location.
    return build_definitions(Settings.from_env())
