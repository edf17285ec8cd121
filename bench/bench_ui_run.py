"""A UI-style run of one `manga_catalogue` partition beside the time of its step.

What the UI does for "Materialize" of a partition or a backfill: a run of the implicit asset
job, launched through the code location (workspace.yaml, a code server process) and executed
by the run launcher in a new process. The run's time (RUN_START to RUN_SUCCESS, as the UI shows
it) and the time from the GraphQL launch to the run's end are set beside the step's own time.
The UI's own figure is read back through GraphQL as the UI reads it: a run's `startTime` is
its RUN_START event (the run worker has started and loaded the code), `endTime` its
RUN_SUCCESS, and the Runs page shows the difference as the run's duration.

    .venv/bin/python bench/bench_ui_run.py [--partitions 3] [--manga-per-day 150]
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import click
import httpx
from dagster import DagsterRunStatus, RunsFilter, instance_for_test

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, simulator_process, table, throwaway_db  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMES = """
query($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { creationTime startTime endTime } }
}
"""
LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


@click.command()
@click.option("--partitions", default=3, show_default=True, help="Partitions, one run each.")
@click.option("--manga-per-day", default=150, show_default=True)
def main(partitions: int, manga_per_day: int) -> None:
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    days = [f"2025-09-{d:02d}" for d in range(2, 2 + partitions)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            simulator_process(rate_limit=None, manga=0) as sim_url, \
            throwaway_db("postgresql", Path(tmp)) as db_url:
        for day in days:
            httpx.post(f"{sim_url}/_sim/manga", json={"count": manga_per_day, "day": day,
                                                       "contentRating": "safe"},
                       timeout=60).raise_for_status()
        os.environ.update({"DATABASE_URL": db_url, "MANGADEX_API_URL": sim_url,
                           "MANGADEX_RATE_LIMIT": "1000", "UDP_SERVER_URL": "http://127.0.0.1:9",
                           "MANGASYNC_PARTITIONS_START": "2025-09-01"})
        launch_now = {"run_coordinator": {"module": "dagster._core.run_coordinator",
                                          "class": "DefaultRunCoordinator"}}
        with instance_for_test(temp_dir=tmp, overrides=launch_now) as instance, \
                define_out_of_process_context(str(ROOT / "workspace.yaml"), None,
                                              instance) as context:
            for day in days:
                started = time.monotonic()
                result = execute_dagster_graphql(context, LAUNCH, variables={"params": {
                    "partitionNames": [day], "assetSelection": [{"path": ["manga_catalogue"]}]}})
                backfill_id = result.data["launchPartitionBackfill"]["backfillId"]
                while True:
                    list(execute_backfill_iteration(context.process_context,
                                                    logging.getLogger("bench")))
                    runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
                    if runs and all(r.is_finished for r in runs):
                        break
                    time.sleep(0.05)
                launched_to_end = time.monotonic() - started
                run = runs[0]
                assert run.status == DagsterRunStatus.SUCCESS, run.status
                stats = instance.get_run_stats(run.run_id)
                step = instance.get_run_step_stats(run.run_id)[0]
                run_s = (stats.end_time or 0) - (stats.launch_time or stats.start_time or 0)
                step_s = (step.end_time or 0) - (step.start_time or 0)
                shown = execute_dagster_graphql(context, RUN_TIMES,
                                                variables={"runId": run.run_id}).data["runOrError"]
                ui_s = shown["endTime"] - shown["startTime"]
                rows.append([day, manga_per_day, f"{step_s:.2f} s",
                             f"{ui_s:.2f} s ({ui_s / step_s:.1f}x)",
                             f"{run_s:.2f} s ({run_s / step_s:.1f}x)", f"{launched_to_end:.2f} s"])
    print(f"`{command()}`\n")
    print(table(["partition", "manga", "step", "run as the UI shows it (x step)",
                 "launch to success (x step)", "GraphQL launch to run end"], rows))


if __name__ == "__main__":
    main()
