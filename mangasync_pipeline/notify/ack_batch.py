"""ACKs: what they cancel at once (the pushes in flight to every device of the user), and their
writes to the database, gathered so that thousands of clients acknowledging at once cost a
handful of transactions.

Only the user's own pushes are cancelled, and only ids pushed to that user in this process
count as known; the rest are checked against the user's rows in the database, so someone
else's ids change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.sessions import Session, UserState
from mangasync_pipeline.notify.store import NotifyStore

log = logging.getLogger("mangasync.notify.udp")


def cancel_acked(devices: Iterable[Session], ids: Iterable[int]) -> list[tuple[int, bool]]:
    """Stop retransmitting `ids` to any of the user's `devices`; each id with whether this
    process pushed it to one of them (known) or not."""
    devices = list(devices)
    acked: list[tuple[int, bool]] = []
    for nid in ids:
        known = False
        for other in devices:
            other.inflight.pop(nid, None)  # its retransmission deadline then does nothing
            other.stranded.pop(nid, None)
            known = known or nid in other.seen
        acked.append((nid, known))
    return acked


def cancel_remote(users: dict[int, UserState], pairs: Iterable[tuple[int, int]]) -> None:
    """ACKs taken by another server process, as (user id, notification id): stop
    retransmitting those here."""
    for user_id, nid in pairs:
        state = users.get(user_id)
        if state is None:
            continue
        for session in state.sessions.values():
            session.inflight.pop(nid, None)
            session.stranded.pop(nid, None)


class AckBatch:
    """(user id, notification id) pairs acknowledged, written by one task a batch at a time."""

    def __init__(self, store: NotifyStore, run_db: Callable[..., Awaitable[Any]],
                 metrics: NotifyMetrics) -> None:
        self.store = store
        self.run_db = run_db
        self.metrics = metrics
        self.unknown: list[tuple[int, int]] = []
        self.known: list[tuple[int, int]] = []  # ids this process pushed to that user
        self._wakeup = asyncio.Event()

    def take(self, session: Session, devices: Iterable[Session], ids: list[int]) -> None:
        for nid, known in cancel_acked(devices, ids):
            (self.known if known else self.unknown).append((session.user_id, nid))
        if ids:
            log.debug("ACK of %s from user %s session %s", ids, session.user_id, session.short)
            self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        batch, self.unknown = self.unknown, []
        known, self.known = self.known, []
        if not batch and not known:
            return
        try:
            changed = await self.run_db(self.store.mark_read, batch, known)
        except Exception as exc:
            log.warning("could not mark %d acknowledged notifications read (they stay unread "
                        "and will be sent again): %s", len(batch) + len(known), exc)
            return
        self.metrics.acknowledged.inc(changed)
        log.debug("%d of %d acknowledged notifications marked read", changed,
                  len(batch) + len(known))
