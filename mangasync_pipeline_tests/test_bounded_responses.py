"""Bounded responses: a body too big, a gzip bomb and a body dripped a byte at a time, served
over real HTTP by the simulator, end each attempt with a one-line reason instead of taking
the process's memory or hanging it (their memory and time are measured in
bench/bench_hostile_bodies.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine

from mangasync_pipeline.config import ClientPolicy
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.mangadex.errors import MalformedResponseError, MangaDexUnavailableError
from mangasync_pipeline.mangadex.simulator import SimulatorAdmin
from mangasync_pipeline.sync import state
from mangasync_pipeline.sync.catalogue import initial_sync
from mangasync_pipeline_tests.sync_helpers import FAST_POLICY

SMALL = replace(FAST_POLICY, max_body_bytes=4 * 1024 * 1024)


def client_for(url: str, policy: ClientPolicy = SMALL) -> MangaDexClient:
    return MangaDexClient(url, rate_limit=None, policy=policy)


@pytest.mark.parametrize("fault", [{"oversized": 1, "oversized_mb": 64},
                                   {"gzip_bomb": 1, "bomb_mb": 256}],
                         ids=["64-MB-body", "gzip-bomb"])
def test_a_body_past_the_cap_is_one_failed_attempt_and_the_retry_gets_the_page(
        simulator_admin: SimulatorAdmin, fault: dict[str, Any]) -> None:
    simulator_admin.set_faults(**fault)
    with client_for(simulator_admin.url) as client:
        found = client.newest_manga(10, includes=())
        assert len(found) == 10
        assert client.stats.snapshot().requests == {("/manga", "too_large"): 1,
                                                    ("/manga", "200"): 1}


def test_a_body_that_stays_past_the_cap_fails_with_its_reason(
        simulator_admin: SimulatorAdmin) -> None:
    simulator_admin.set_faults(gzip_bomb=10, bomb_mb=64)
    with client_for(simulator_admin.url) as client, \
            pytest.raises(MalformedResponseError, match="inflates past the 4,194,304-byte cap"):
        client.newest_manga(10, includes=())


def test_a_dripped_body_ends_at_the_attempt_deadline_not_between_bytes(
        simulator_admin: SimulatorAdmin) -> None:
    # Each byte comes well within the read timeout; only the whole-attempt deadline ends it.
    simulator_admin.set_faults(drip=1, drip_ms=300)
    policy = replace(SMALL, max_retries=0, connect_timeout=0.5, read_timeout=1.5)
    with client_for(simulator_admin.url, policy) as client, \
            pytest.raises(MangaDexUnavailableError, match="attempt's deadline: 2.0 s"):
        client.newest_manga(10, includes=())


def test_an_initial_sync_that_meets_a_drip_fails_and_leaves_no_state_running(
        simulator_admin: SimulatorAdmin, engine: Engine) -> None:
    simulator_admin.set_faults(drip=1, drip_ms=300)
    policy = replace(SMALL, max_retries=0, connect_timeout=0.5, read_timeout=1.5)
    with client_for(simulator_admin.url, policy) as client, \
            pytest.raises(MangaDexUnavailableError):
        initial_sync(engine, client, 50)
    with engine.connect() as conn:
        row = state.get_state(conn, state.INITIAL_SYNC)
    assert row is not None and row["status"] == "error"
    assert "deadline" in row["error_message"]
