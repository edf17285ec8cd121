"""Pushes in flight: their retransmission with exponential backoff (RFC 7252 4.8), the pushes
whose retries ran out, and sending those again when the session shows it is alive (a PING).

A push is recorded here as it is sent (`push`), and its deadline is armed with those sent in
the same slice (`arm`): one random timeout and one counter step per slice, and deadlines that
share one loop timer per slot (`SlotTimers`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.sessions import Address, Inflight, PushSlice, Session
from mangasync_pipeline.notify.timers import SlotTimers

log = logging.getLogger("mangasync.notify.udp")

RETRY_SLOTS = 40  # retransmission deadlines are grouped in slots of ack_timeout / this


def plan_redelivery(session: Session, now: float, ack_timeout: float,
                    budget: int) -> tuple[list[Inflight], list[int]]:
    """What a PING of a session with unacknowledged pushes sets off: (the in-flight items sent
    within the last ACK timeout, already retried, whose retries start over from their last
    send; the ids to send again now, in order).

    Sent again now: the in-flight ones not sent within the last ACK timeout, then those whose
    retries ran out; oldest first and at most `budget` (the rest at the next PING)."""
    due: list[int] = []
    restart: list[Inflight] = []
    for item in session.inflight.values():
        if now - item.sent_at >= ack_timeout:
            due.append(item.id)
        elif item.attempts:
            restart.append(item)
    due.sort()
    return restart, due[:budget] + sorted(session.stranded)[:max(0, budget - len(due))]


class Retransmissions:
    def __init__(self, loop: asyncio.AbstractEventLoop, options: ServerOptions,
                 metrics: NotifyMetrics, send: Callable[[bytes, Address], None]) -> None:
        self.opt = options
        self.metrics = metrics
        self.send = send
        self.rng = random.Random()
        self.timers: SlotTimers[tuple[Session, Inflight]] = SlotTimers(
            loop, options.ack_timeout / RETRY_SLOTS, self._retransmit)

    def new_slice(self) -> PushSlice:
        """The first retransmission timeout is drawn from [ACK_TIMEOUT, ACK_TIMEOUT x
        ACK_RANDOM_FACTOR] (RFC 7252 4.8) once per slice of pushes rather than per push."""
        return PushSlice(self.rng.uniform(self.opt.ack_timeout,
                                          self.opt.ack_timeout * self.opt.ack_random_factor),
                         time.monotonic())

    def push(self, session: Session, nid: int, data: bytes, pushes: PushSlice) -> None:
        """Send; `arm(pushes)` arms the retransmission and counts it."""
        item = Inflight(nid, data, pushes.timeout, pushes.at)
        session.inflight[nid] = item
        pushes.due.append((session, item))
        self.send(data, session.addr)

    def arm(self, pushes: PushSlice) -> None:
        """Arm a slice's retransmissions and count its pushes, once for the whole slice."""
        if pushes.due:
            self.timers.add_many(pushes.timeout, pushes.due)
            self.metrics.sent.inc(len(pushes.due))

    def _retransmit(self, due: tuple[Session, Inflight]) -> None:
        session, item = due
        if session.closed or session.inflight.get(item.id) is not item:
            return  # acknowledged (or the session ended) since
        if item.attempts >= self.opt.max_retransmit:
            del session.inflight[item.id]
            session.stranded[item.id] = item.data
            self.metrics.given_up.inc()
            log.info("notification %s unacknowledged by session %s of user %s after %d retries;"
                     " sent again after the session's next PING", item.id, session.short,
                     session.user_id, item.attempts)
            return
        item.attempts += 1
        item.timeout *= 2
        item.sent_at = time.monotonic()
        self.timers.add(item.timeout, due)
        self.send(item.data, session.addr)
        self.metrics.retransmitted.inc()

    def redeliver(self, session: Session, now: float) -> None:
        """The session is alive (it PINGed): what it has not acknowledged goes again now, with
        its retransmissions starting over from the first timeout (one sent within the last
        ACK timeout is not sent again yet, but its next retry comes a first timeout after
        that send). Waiting out a backoff grown during the loss would hold back a reader
        whose path plainly works again; a PING flood gets no more than one round per ACK
        timeout."""
        session.redeliver_at = now + self.opt.ack_timeout
        pushes = self.new_slice()
        restart, batch = plan_redelivery(session, now, self.opt.ack_timeout,
                                         self.opt.send_budget)
        for item in restart:
            fresh = Inflight(item.id, item.data, pushes.timeout, item.sent_at)
            session.inflight[item.id] = fresh  # the old deadline then does nothing
            self.timers.add(max(0.0, item.sent_at + pushes.timeout - now), (session, fresh))
        if not batch:
            return
        log.debug("%d notifications sent again to session %s of user %s after its PING",
                  len(batch), session.short, session.user_id)
        for nid in batch:
            data = session.stranded.pop(nid, None)
            if data is None:
                data = session.inflight[nid].data
            self.push(session, nid, data, pushes)
        self.arm(pushes)

    def close(self) -> None:
        self.timers.close()
