"""The sessions one process holds: by id, by user (with the user's send budget) and by address.

Opening, replacing and closing sessions, their expiry, and forgetting idle users; nothing here
sends or touches the database, and time is passed in.
"""

from __future__ import annotations

import logging
import secrets

from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.sessions import Address, Session, UserState

log = logging.getLogger("mangasync.notify.udp")


def show(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


class SessionTable:
    def __init__(self, options: ServerOptions, now: float) -> None:
        self.opt = options
        self.sessions: dict[str, Session] = {}
        self.users: dict[int, UserState] = {}
        self.addr_sessions: dict[Address, int] = {}
        self.opened = self.ended = 0  # since the last summary line
        self.summary_at = now

    def online_user_ids(self) -> set[int]:
        return {uid for uid, state in self.users.items() if state.sessions}

    def has_session(self, addr: Address) -> bool:
        return self.addr_sessions.get(addr, 0) > 0

    def open(self, user_id: int, username: str, addr: Address, size: int,
             now: float) -> Session:
        """A new session for a REGISTER of `size` bytes from `addr`: it replaces the user's
        session at that address, and the user's oldest when the user has the most allowed."""
        state = self.users.get(user_id)
        if state is None:
            budget = float(self.opt.send_budget)
            state = self.users[user_id] = UserState(
                user_id, budget, budget / self.opt.budget_window, budget, now)
        for old in [s for s in state.sessions.values() if s.addr == addr]:
            # (Quietly: a client registering in a loop would otherwise write a line each time.)
            self.close(old, "replaced by a new REGISTER from the same address", quiet=True)
        while len(state.sessions) >= self.opt.max_sessions_per_user:
            oldest = next(iter(state.sessions.values()))  # (the dict is in REGISTER order)
            self.close(oldest, f"the user's {self.opt.max_sessions_per_user + 1}th device "
                               "registered", quiet=True)
        session = Session(secrets.token_urlsafe(18), user_id, username, addr, now,
                          bytes_in=size)
        self.sessions[session.id] = session
        state.sessions[session.id] = session
        self.addr_sessions[addr] = self.addr_sessions.get(addr, 0) + 1
        self.opened += 1
        return session

    def close(self, session: Session, why: str, quiet: bool = False) -> None:
        if session.closed:
            return
        self.ended += 1
        session.closed = True
        session.cancel_timers()
        self.sessions.pop(session.id, None)
        state = self.users.get(session.user_id)
        if state is not None:
            state.sessions.pop(session.id, None)
        left = self.addr_sessions.get(session.addr, 1) - 1
        if left > 0:
            self.addr_sessions[session.addr] = left
        else:
            self.addr_sessions.pop(session.addr, None)
        (log.debug if quiet else log.info)(
            "session %s of user %s at %s ended: %s", session.short, session.user_id,
            show(session.addr), why)

    def close_all(self, why: str) -> None:
        if self.sessions:
            log.info("%d sessions ended: %s", len(self.sessions), why)
        for session in list(self.sessions.values()):
            self.close(session, why, quiet=True)

    def expire(self, now: float) -> None:
        """End the sessions silent for three heartbeats."""
        limit = 3 * self.opt.heartbeat
        for session in [s for s in self.sessions.values() if now - s.last_seen > limit]:
            self.close(session, f"no datagram for {limit:g} s", quiet=True)

    def report(self, now: float) -> None:
        """One line a minute, not one per session: 10,000 readers would drown the log."""
        if now - self.summary_at >= 60 and (self.opened or self.ended):
            log.info("sessions: %d open; %d opened and %d ended since the last report",
                     len(self.sessions), self.opened, self.ended)
            self.opened = self.ended = 0
            self.summary_at = now

    def sweep_users(self, now: float) -> None:
        """Refill the budgets; forget an idle user only once the budget has fully recovered."""
        for uid, state in list(self.users.items()):
            state.wait_for_token(now)  # refills the bucket
            if not state.sessions and state.tokens >= state.capacity:
                del self.users[uid]
            else:
                state.prune(now, self.opt.budget_window)
