"""Holding off the cyclic garbage collector during a burst (notify/gc_pause.py): the collector is
one per process, so holds of several endpoints are counted together."""

from __future__ import annotations

import gc

import pytest

from mangasync_pipeline.notify.gc_pause import GcPause

pytestmark = pytest.mark.usefixtures("collector_on")


def test_a_hold_turns_the_collector_off_until_released() -> None:
    pause = GcPause()
    pause.hold(0.0)
    assert not gc.isenabled() and pause.holds == 1
    pause.hold(0.1)  # already held: one hold
    assert pause.holds == 1
    pause.release()
    assert gc.isenabled()
    pause.release()  # released twice: nothing more
    assert gc.isenabled()


def test_one_endpoint_letting_go_leaves_the_collector_off_for_the_other() -> None:
    a, b = GcPause(), GcPause()
    a.hold(0.0)
    b.hold(0.1)
    a.release()
    assert not gc.isenabled()  # b's burst is still going
    b.release()
    assert gc.isenabled()
    b.hold(1.0)
    a.hold(1.1)
    b.release()
    a.release()
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    gc.disable()
    pause = GcPause()
    pause.hold(0.0)
    pause.release()
    assert not gc.isenabled()


def test_a_hold_is_overdue_after_the_limit_counted_from_the_first_holder() -> None:
    a, b = GcPause(limit=1.0), GcPause(limit=1.0)
    a.hold(10.0)
    b.hold(10.8)
    assert not a.overdue(10.9) and not b.overdue(10.9)
    assert a.overdue(11.1) and b.overdue(11.1)  # b joined late, but cannot stretch the pause
    a.release()
    b.release()
    assert not a.overdue(20.0)  # not held
