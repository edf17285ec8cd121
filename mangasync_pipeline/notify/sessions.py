"""In-memory state of UDP sessions: one `Session` per registered device, one `UserState` per user.

Nothing here touches the database or the network; the UDP endpoint's parts drive it
(`session_table`, `pushes`, `retransmission`, `ack_batch`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from mangasync_pipeline.notify.store import Notice

Address = tuple[str, int]


@dataclass(slots=True)  # one per push: 10,000 at once in a broadcast
class Inflight:
    """A pushed notification waiting for its ACK."""

    id: int
    data: bytes
    timeout: float
    sent_at: float  # monotonic time of the last send
    attempts: int = 0


@dataclass(eq=False)
class Session:
    id: str
    user_id: int
    username: str
    addr: Address
    last_seen: float
    queue: deque[Notice] = field(default_factory=deque)  # waiting for the send budget
    seen: set[int] = field(default_factory=set)  # ids queued or sent in this session
    inflight: dict[int, Inflight] = field(default_factory=dict)
    # While catching up from the database, live pushes wait here to keep oldest-first order.
    catching_up: bool = True
    more_after: int | None = None  # more unread beyond this id remain in the database
    live_pending: list[Notice] = field(default_factory=list)
    pump_handle: asyncio.TimerHandle | None = None
    ready: bool = False  # in the list of sessions `Pushes` pumps next
    loading: bool = False
    closed: bool = False
    # Address validation (the QUIC rule): until the address echoes the session id in a PING
    # or an ACK, it gets at most `amplification` x the bytes it sent, and no catch-up.
    validated: bool = False
    bytes_in: int = 0
    bytes_out: int = 0
    # Pushes whose retries ran out: sent again on the session's next PING.
    stranded: dict[int, bytes] = field(default_factory=dict)
    redeliver_at: float = 0.0  # no resends on PING before this (a PING flood gets no more)

    @property
    def short(self) -> str:
        return self.id[:8]

    def cancel_timers(self) -> None:
        # (Retransmission deadlines find their item gone from `inflight` and do nothing.)
        self.inflight.clear()
        if self.pump_handle is not None:
            self.pump_handle.cancel()
            self.pump_handle = None


@dataclass(slots=True)
class PushSlice:
    """Pushes sent together (a pump callback's sessions, a redelivery): one retransmission
    timeout drawn for all of them, their deadlines armed and their count taken at once."""

    timeout: float
    at: float  # when they are sent
    due: list[tuple[Session, Inflight]] = field(default_factory=list)


@dataclass
class UserState:
    """Per-user send budget (a token bucket) and the user's live sessions."""

    user_id: int
    capacity: float
    rate: float  # tokens per second
    tokens: float
    updated: float
    sessions: dict[str, Session] = field(default_factory=dict)
    # Ids charged to the budget recently: a notification costs once, whatever the devices.
    charged: dict[int, float] = field(default_factory=dict)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def charge(self, notification_id: int, now: float) -> bool:
        if notification_id in self.charged:
            return True
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        self.charged[notification_id] = now
        return True

    def wait_for_token(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.rate) if self.rate > 0 else 60.0

    def prune(self, now: float, window: float) -> None:
        if self.charged:
            self.charged = {i: at for i, at in self.charged.items() if now - at < window}
