"""The coalescing trigger writer alone: concurrent triggers share writes, in arrival order, each
caller gets its own outcome, and a failed write fails only the triggers it carried."""

from __future__ import annotations

import asyncio
from typing import Any

from mangasync_pipeline.notify.coalesce import TriggerWriter
from mangasync_pipeline.notify.store import ACCEPTED, TriggerOutcome


def test_concurrent_triggers_share_writes_in_order_with_their_own_outcomes() -> None:
    writes: list[list[int]] = []

    async def write(items: list[tuple[str, dict[str, Any]]]) -> list[TriggerOutcome]:
        writes.append([p["n"] for _, p in items])
        await asyncio.sleep(0.01)  # the database round trip
        return [TriggerOutcome(p["n"], {"n": p["n"]}, ACCEPTED, []) for _, p in items]

    async def main() -> list[TriggerOutcome]:
        writer = TriggerWriter(write, writers=2, max_batch=20)
        return await asyncio.gather(*(writer.submit("NEW_MANGA", {"n": n}) for n in range(50)))

    outcomes = asyncio.run(main())
    assert [o.trigger_id for o in outcomes] == list(range(50))
    assert [n for batch in writes for n in batch] == list(range(50))  # each once, in order
    assert writes[:2] == [[0], [1]]  # alone, a trigger is written at once
    assert len(writes) < 10 and max(map(len, writes)) <= 20


def test_a_failed_write_fails_only_its_own_triggers() -> None:
    calls = 0

    async def write(items: list[tuple[str, dict[str, Any]]]) -> list[TriggerOutcome]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise ConnectionError("database gone")
        return [TriggerOutcome(p["n"], {}, ACCEPTED, []) for _, p in items]

    async def main() -> list[Any]:
        writer = TriggerWriter(write, writers=1)
        return await asyncio.gather(*(writer.submit("NEW_MANGA", {"n": n}) for n in range(5)),
                                    return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[0], ConnectionError)
    assert [r.trigger_id for r in results[1:]] == [1, 2, 3, 4]
