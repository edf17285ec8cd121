"""Deadlines that many items share: one event-loop timer per time slot, not one per item.

A broadcast to 10,000 readers arms 10,000 retransmission deadlines at once; a `TimerHandle`
each (a context copy and a heap push, then a cancellation when the ACK comes) was a fifth of
the server's time per push. Here an item joins the list of its slot; the slot's one timer
hands the whole list to the callback, which skips what was acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotTimers(Generic[T]):
    """Calls `fire(item)` for each item no earlier than its delay, at most `width` later."""

    def __init__(self, loop: asyncio.AbstractEventLoop, width: float,
                 fire: Callable[[T], None]) -> None:
        self.loop, self.width, self.fire = loop, width, fire
        self._slots: dict[int, list[T]] = {}
        self._handles: dict[int, asyncio.TimerHandle] = {}

    def add(self, delay: float, item: T) -> None:
        self.add_many(delay, (item,))

    def add_many(self, delay: float, items: Iterable[T]) -> None:
        """The same deadline for all of `items` (one slot lookup for a whole slice)."""
        slot = math.ceil((self.loop.time() + delay) / self.width)
        pending = self._slots.get(slot)
        if pending is None:
            pending = self._slots[slot] = []
            self._handles[slot] = self.loop.call_at(slot * self.width, self._fire, slot)
        pending.extend(items)

    def _fire(self, slot: int) -> None:
        self._handles.pop(slot, None)
        for item in self._slots.pop(slot, ()):
            self.fire(item)

    def __len__(self) -> int:
        return sum(map(len, self._slots.values()))

    def close(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._slots.clear()
