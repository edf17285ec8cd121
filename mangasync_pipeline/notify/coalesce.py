"""Concurrent single triggers share transactions.

Each trigger alone costs a commit (a WAL flush on PostgreSQL) and a database thread for its
whole round trip; fifty callers at once queued behind four threads. Here a trigger that arrives
while the writers are busy waits for the next free writer, which stores everything waiting (up
to a batch) in one transaction with its statements pipelined. Each trigger keeps its own
outcome; alone, a trigger is written at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mangasync_pipeline.notify.store import TriggerOutcome

Write = Callable[[list[tuple[str, dict[str, Any]]]], Awaitable[list[TriggerOutcome]]]


class TriggerWriter:
    def __init__(self, write: Write, *, writers: int = 2, max_batch: int = 500) -> None:
        self._write = write
        self._writers = writers
        self._max_batch = max_batch
        self._waiting: list[tuple[str, dict[str, Any], asyncio.Future[TriggerOutcome]]] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def submit(self, kind: str, payload: dict[str, Any]) -> TriggerOutcome:
        future: asyncio.Future[TriggerOutcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((kind, payload, future))
        self._start()
        return await future

    def _start(self) -> None:
        while self._waiting and self._running < self._writers:
            batch = self._waiting[:self._max_batch]
            del self._waiting[:self._max_batch]
            self._running += 1
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[str, dict[str, Any],
                                           asyncio.Future[TriggerOutcome]]]) -> None:
        try:
            outcomes = await self._write([(kind, payload) for kind, payload, _ in batch])
        except Exception as exc:  # the database: every trigger of the batch gets the error
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            # In arrival order, so the pushes that follow keep that order.
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        finally:
            self._running -= 1
            self._start()
