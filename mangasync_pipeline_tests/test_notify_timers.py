"""Retransmission deadlines grouped in slots: none fires early, none much late."""

from __future__ import annotations

import asyncio

from mangasync_pipeline.notify.timers import SlotTimers


def test_items_fire_after_their_delay_within_one_slot() -> None:
    async def scenario() -> list[tuple[int, float, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[int, float, float]] = []
        timers: SlotTimers[tuple[int, float]] = SlotTimers(
            loop, 0.02, lambda item: fired.append((item[0], item[1], loop.time())))
        for i, delay in enumerate([0.07, 0.03, 0.07, 0.11, 0.001]):
            timers.add(delay, (i, loop.time() + delay))
        assert len(timers) == 5
        await asyncio.sleep(0.2)
        assert len(timers) == 0
        return fired

    fired = asyncio.run(scenario())
    assert sorted(i for i, _, _ in fired) == [0, 1, 2, 3, 4]
    for _, due, at in fired:
        assert due <= at + 1e-3 < due + 0.02 + 0.05  # no earlier; late by a slot plus the loop
    assert [i for i, _, _ in fired] == [4, 1, 0, 2, 3]  # by slot, then in the order added


def test_close_drops_what_is_pending() -> None:
    async def scenario() -> list[int]:
        fired: list[int] = []
        timers: SlotTimers[int] = SlotTimers(asyncio.get_running_loop(), 0.01, fired.append)
        timers.add(0.02, 1)
        timers.close()
        await asyncio.sleep(0.05)
        return fired

    assert asyncio.run(scenario()) == []
