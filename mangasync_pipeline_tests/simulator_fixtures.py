"""pytest fixtures for the MangaDex simulator (register with `pytest_plugins`).

- `make_simulator(**kwargs)`: a started `Simulator`, stopped at teardown. Defaults differ
  from `Simulator`'s so tests stay fast: 300 manga and no rate limit unless given.
- `simulator`: a started 300-manga simulator, rate limit off.
- `simulator_admin`: a `SimulatorAdmin` bound to `simulator`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mangasync_pipeline.mangadex.simulator import Simulator, SimulatorAdmin

TEST_DEFAULTS: dict[str, Any] = {"seed": 42, "manga_count": 300, "rate_limit": None}


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def factory(**kwargs: Any) -> Simulator:
        sim = Simulator(**{**TEST_DEFAULTS, **kwargs}).start()
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., Simulator]) -> Simulator:
    return make_simulator()


@pytest.fixture
def simulator_admin(simulator: Simulator) -> Iterator[SimulatorAdmin]:
    with SimulatorAdmin(simulator.url) as admin:
        yield admin
