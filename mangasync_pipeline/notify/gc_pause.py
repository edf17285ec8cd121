"""Holding off Python's cyclic garbage collector while a burst of pushes goes out.

A broadcast allocates 10,000 retransmission records that live until their ACK, which sets off
collections of the whole heap (10,000 sessions) in the middle of it, 50 to 80 ms each, as long
as the rest of the broadcast. So the collector waits until the pushes are sent (at most
`MAX_GC_PAUSE`), and collects after.

The collector is one per process, and a process may hold several endpoints (servers side by
side, one thread each). A hold is therefore counted here once for the process: the first
holder disables the collector (only if it was enabled: a collector someone else turned off
stays theirs), the last one to let go enables it again, and no holder can turn it back on
under another's burst or leave it off for the others.
"""

from __future__ import annotations

import gc
import threading

MAX_GC_PAUSE = 1.0  # seconds a burst of pushes may hold off the cyclic garbage collector

_lock = threading.Lock()
_holders = 0  # GcPause objects holding the collector now, in this process
_disabled = False  # whether the holders turned the collector off (and so must turn it on)
_since = 0.0  # when the current pause began (monotonic)


class GcPause:
    """One endpoint's hold on the process's collector; `holds` counts the pauses it asked."""

    def __init__(self, limit: float = MAX_GC_PAUSE) -> None:
        self.limit = limit
        self.held = False
        self.holds = 0

    def hold(self, now: float) -> None:
        global _holders, _disabled, _since
        if self.held:
            return
        with _lock:
            if _holders == 0:
                _disabled = gc.isenabled()
                if _disabled:
                    gc.disable()
                _since = now
            _holders += 1
        self.held = True
        self.holds += 1

    def overdue(self, now: float) -> bool:
        """Held for longer than the limit (counted from the start of the process's pause, so
        that overlapping bursts of several endpoints cannot chain it out)."""
        return self.held and now - _since > self.limit

    def release(self) -> None:
        global _holders, _disabled
        if not self.held:
            return
        self.held = False
        with _lock:
            _holders -= 1
            if _holders == 0 and _disabled:
                _disabled = False
                gc.enable()
