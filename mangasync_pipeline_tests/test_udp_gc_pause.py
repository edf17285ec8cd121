"""Holding off the cyclic garbage collector during a burst (notify/gc_pause.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mangasync_pipeline.notify.gc_pause import GcPause


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_a_hold_turns_the_collector_off_until_released() -> None:
    pause = GcPause()
    pause.hold(0.0)
    assert not gc.isenabled()
    pause.hold(0.1)
    pause.release()
    assert gc.isenabled()
    pause.release()  # released twice: nothing more
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    gc.disable()
    pause = GcPause()
    pause.hold(0.0)
    pause.release()
    assert not gc.isenabled()


def test_a_hold_is_overdue_after_the_limit() -> None:
    pause = GcPause(limit=1.0)
    pause.hold(10.0)
    assert not pause.overdue(10.9) and pause.overdue(11.1)
    pause.release()
    assert not pause.overdue(20.0)  # not held
