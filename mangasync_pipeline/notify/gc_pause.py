"""Holding off Python's cyclic garbage collector while a burst of pushes goes out.

A broadcast allocates 10,000 retransmission records that live until their ACK, which sets off
collections of the whole heap (10,000 sessions) in the middle of it, 50 to 80 ms each, as long
as the rest of the broadcast. So the collector waits until the pushes are sent (at most
`MAX_GC_PAUSE`), and collects after. A collector someone else turned off stays off.
"""

from __future__ import annotations

import gc

MAX_GC_PAUSE = 1.0  # seconds a burst of pushes may hold off the cyclic garbage collector


class GcPause:
    def __init__(self, limit: float = MAX_GC_PAUSE) -> None:
        self.limit = limit
        self.since: float | None = None

    def hold(self, now: float) -> None:
        if self.since is None and gc.isenabled():
            gc.disable()
            self.since = now

    def overdue(self, now: float) -> bool:
        return self.since is not None and now - self.since > self.limit

    def release(self) -> None:
        if self.since is not None:
            self.since = None
            gc.enable()
