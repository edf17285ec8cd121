"""Pruning old runs takes their asset check executions with them: Dagster's delete_run leaves
them behind, and at the chapter sensor's pace they grew by about 1.3 MB an hour in the soak."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetKey,
    asset,
    asset_check,
    instance_for_test,
    materialize,
)

from mangasync_pipeline.defs.retention import prune_runs


@asset
def shelf() -> int:
    return 1


@asset_check(asset=shelf)
def shelf_counted() -> AssetCheckResult:
    return AssetCheckResult(passed=True)


CHECK = AssetCheckKey(AssetKey("shelf"), "shelf_counted")


@pytest.mark.database
def test_pruned_runs_leave_no_check_executions_but_each_checks_latest() -> None:
    with instance_for_test() as instance:
        checked = [materialize([shelf, shelf_counted], instance=instance).run_id
                   for _ in range(3)]
        # The latest materialization without its check: the check's latest execution is now
        # in a run that retention deletes.
        latest = materialize([shelf], instance=instance).run_id

        report = prune_runs(instance, datetime.now(UTC), instance.get_asset_keys())

        assert {r.run_id for r in instance.get_runs()} == {latest}
        assert (report.deleted, report.check_executions_deleted) == (3, 2)
        history = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=10)
        # Only the check's latest execution is left, so the UI still shows its state.
        assert [e.run_id for e in history] == [checked[-1]]
        assert "2 asset check executions" in report.line()
