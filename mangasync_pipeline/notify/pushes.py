"""Pushing notifications to sessions: live ones as triggers store them, and each session's
queue paced by its user's send budget.

A broadcast readies thousands of sessions at once: they wait in one list, pumped `PUMP_BATCH`
per loop callback (a loop handle each was a fifth of the time per push), so HTTP answers and
incoming ACKs are not held up behind all of them; the cyclic garbage collector waits until the
list is empty (`GcPause`). A notification shared by thousands is encoded once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.gc_pause import GcPause
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.retransmission import Retransmissions
from mangasync_pipeline.notify.sessions import PushSlice, Session, UserState
from mangasync_pipeline.notify.store import Notice

PUMP_BATCH = 256  # sessions pumped per callback before other callbacks get the loop
MAX_TEMPLATES = 64  # encoded notifications kept; beyond, all are dropped and encoded again


class Pushes:
    def __init__(self, loop: asyncio.AbstractEventLoop, options: ServerOptions,
                 users: dict[int, UserState], inflight: Retransmissions,
                 load_more: Callable[[Session], None]) -> None:
        self.loop = loop
        self.opt = options
        self.users = users
        self.inflight = inflight
        self._push = inflight.push  # (once per push in a broadcast: bound once)
        self.load_more = load_more  # called when a session's queue ran dry with more unread
        self.gc_pause = GcPause()
        # Sessions with something to push now, in the order they became ready.
        self._ready: deque[Session] = deque()
        self._ready_handle: asyncio.Handle | None = None
        self._templates: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}

    def deliver(self, notices: Iterable[Notice]) -> None:
        """Push stored notifications to the sessions of their users held by this process."""
        for notice in notices:
            state = self.users.get(notice.user_id)
            if state is None:
                continue
            for session in state.sessions.values():
                if session.catching_up:
                    session.live_pending.append(notice)
                elif notice.id not in session.seen:
                    session.seen.add(notice.id)
                    session.queue.append(notice)
                    # (Pushing right here, in one loop, measured up to 2x slower than pumping
                    # from later callbacks: the HTTP answer then waits for every push.)
                    self.schedule(session, 0.0)

    def schedule(self, session: Session, delay: float) -> None:
        """Pump the session after `delay` seconds (with the ready ones, for 0)."""
        if session.pump_handle is not None or session.ready or session.closed:
            return
        if delay > 0:
            session.pump_handle = self.loop.call_later(delay, self._pump_later, session)
            return
        session.ready = True
        self._ready.append(session)
        if self._ready_handle is None:
            self._ready_handle = self.loop.call_soon(self._pump_ready)
            self.gc_pause.hold(time.monotonic())

    def _pump_ready(self) -> None:
        self._ready_handle = None
        ready = self._ready
        now = time.monotonic()
        try:
            pushes = self.inflight.new_slice()
            for _ in range(min(PUMP_BATCH, len(ready))):
                session = ready.popleft()
                session.ready = False
                self._pump(session, now, pushes)
            self.inflight.arm(pushes)
        finally:
            # (Also if a pump failed: the collector must never stay off for want of a call.)
            if ready:
                self._ready_handle = self.loop.call_soon(self._pump_ready)
                if self.gc_pause.overdue(now):
                    self.gc_pause.release()
            else:
                self.gc_pause.release()

    def _pump_later(self, session: Session) -> None:
        session.pump_handle = None
        pushes = self.inflight.new_slice()
        self._pump(session, time.monotonic(), pushes)
        self.inflight.arm(pushes)

    def _pump(self, session: Session, now: float, pushes: PushSlice) -> None:
        """Push what the session's queue and its user's budget allow, into `pushes`."""
        if session.closed:
            return
        state = self.users[session.user_id]
        sent = 0
        while session.queue and sent < self.opt.push_burst:
            notice = session.queue[0]
            if not state.charge(notice.id, now):
                self.schedule(session, state.wait_for_token(now))
                return
            session.queue.popleft()
            self._push(session, notice.id, self._encode(notice), pushes)
            sent += 1
        if session.queue:
            self.schedule(session, self.opt.push_pace)
        elif session.more_after is not None and not session.loading:
            session.loading = True
            self.load_more(session)

    def _encode(self, notice: Notice) -> bytes:
        # One broadcast is thousands of notifications that differ only by id: encode once.
        key = notice.shared_fields()
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.clear()
            template = self._templates[key] = protocol.notification_template(
                notice.to_message())
        return template[0] + str(notice.id).encode() + template[1]

    def close(self) -> None:
        self.gc_pause.release()
