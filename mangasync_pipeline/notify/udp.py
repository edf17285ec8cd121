"""The UDP side of the notification server (PROTOCOL.md, "UDP"): an asyncio datagram endpoint.

Sessions, pushes, retransmissions and budgets live in memory on the event loop; every database
call goes through `run_db` (a thread pool), and an ACK is written in batches so that thousands
of clients acknowledging at once cost a handful of transactions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.sessions import Address, Inflight, Session, UserState
from mangasync_pipeline.notify.store import Notice, NotifyStore

log = logging.getLogger("mangasync.notify.udp")
T = TypeVar("T")

MAX_ACK_IDS = 100
MAX_PENDING_REGISTERS = 2000  # REGISTERs awaiting the database; more are dropped


def _addr(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, store: NotifyStore, options: ServerOptions, metrics: NotifyMetrics,
                 run_db: Callable[..., Awaitable[Any]]) -> None:
        self.store = store
        self.opt = options
        self.metrics = metrics
        self.run_db = run_db
        self.transport: asyncio.DatagramTransport | None = None
        self.loop = asyncio.get_running_loop()
        self.sessions: dict[str, Session] = {}
        self.users: dict[int, UserState] = {}
        self.nonces: dict[str, dict[str, float]] = {}  # username -> nonce -> first use
        self.last_error: dict[Address, float] = {}
        self.failed: dict[Address, deque[float]] = {}
        self.addr_sessions: dict[Address, int] = {}
        self.rng = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_registers = 0
        self._acks: list[tuple[int, int]] = []
        self._known_acks: list[tuple[int, int]] = []  # ids this process pushed to that user
        self._ack_wakeup = asyncio.Event()
        self._ack_task = self._spawn(self._ack_writer())
        self._sweeper = self._spawn(self._sweep())
        # Read at scrape time: counting on every REGISTER would make 10,000 of them quadratic.
        metrics.sessions.set_function(lambda: len(self.sessions))
        # (Scrapes run in a worker thread: copy the values in one step before iterating.)
        metrics.users_online.set_function(
            lambda: sum(1 for state in list(self.users.values()) if state.sessions))

    # --- plumbing -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the client is gone; expiry will tell.
        log.debug("udp error: %s", exc)

    def _spawn(self, coro: Awaitable[T]) -> asyncio.Task[T]:
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("udp task failed: %s", task.exception(), exc_info=task.exception())

    def _send(self, data: bytes, addr: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def _error(self, addr: Address, code: str, cause_len: int, message: str | None = None,
               now: float | None = None) -> None:
        """An ERROR, at most one per address per interval, never longer than its cause."""
        now = time.monotonic() if now is None else now
        last = self.last_error.get(addr)
        if last is not None and now - last < self.opt.error_interval:
            return
        data = protocol.encode(protocol.error_message(code, message))
        if len(data) > cause_len:
            data = protocol.encode(protocol.error_message(code))
        if len(data) > cause_len:
            return
        self.last_error[addr] = now
        self._send(data, addr)

    def _reject(self, reason: str) -> None:
        self.metrics.datagrams_rejected.labels(reason).inc()

    # --- incoming -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        try:
            self._handle(data, addr)
        except Exception:  # one bad datagram must never stop the endpoint
            log.exception("datagram from %s could not be handled", _addr(addr))

    def _handle(self, data: bytes, addr: Address) -> None:
        now = time.monotonic()
        msg = protocol.decode(data)
        if msg is None:
            self._reject("malformed")
            self._error(addr, "BAD_REQUEST", len(data), "not a JSON object with a type", now)
            return
        kind = msg["type"]
        if kind == "REGISTER":
            self._on_register(msg, addr, len(data), now)
            return
        if kind not in ("ACK", "PING", "UNREGISTER"):
            self._reject("unknown_type")
            self._error(addr, "BAD_REQUEST", len(data), "unknown type", now)
            return
        sid = msg.get("session")
        session = self.sessions.get(sid) if isinstance(sid, str) else None
        if session is None or session.addr != addr:
            self._reject("session_unknown")
            self._error(addr, "SESSION_UNKNOWN", len(data), None, now)
            return
        session.last_seen = now
        if kind == "PING":
            self._send(protocol.encode({"type": "PONG"}), addr)
        elif kind == "UNREGISTER":
            self._close(session, "unregistered")
            self._send(protocol.encode({"type": "BYE"}), addr)
        else:
            self._on_ack(session, msg.get("ids"), addr, len(data), now)

    def _on_ack(self, session: Session, ids: Any, addr: Address, size: int, now: float) -> None:
        if (not isinstance(ids, list) or len(ids) > MAX_ACK_IDS
                or not all(type(i) is int and 0 < i < 2**63 for i in ids)):
            self._reject("bad_ack")
            self._error(addr, "BAD_REQUEST", size, "ids: list of at most 100 ids", now)
            return
        user = self.users.get(session.user_id)
        devices = list(user.sessions.values()) if user else [session]
        for nid in ids:
            # Only this user's own pushes are cancelled here, and only ids pushed to this user
            # count as known; the rest are checked against the user's rows in the database,
            # so someone else's ids change nothing.
            known = False
            for other in devices:
                item = other.inflight.pop(nid, None)
                if item is not None and item.handle is not None:
                    item.handle.cancel()
                known = known or nid in other.seen
            (self._known_acks if known else self._acks).append((session.user_id, nid))
        if ids:
            log.debug("ACK of %s from user %s session %s", ids, session.user_id, session.short)
            self._ack_wakeup.set()

    def _on_register(self, msg: dict[str, Any], addr: Address, size: int, now: float) -> None:
        user, ts, nonce, sig = msg.get("user"), msg.get("ts"), msg.get("nonce"), msg.get("sig")
        failures = self.failed.get(addr)
        if failures is not None:
            while failures and now - failures[0] > self.opt.failed_register_window:
                failures.popleft()
            if len(failures) >= self.opt.failed_register_limit:
                self._reject("register_limited")
                return  # silently: the address keeps failing
        if not (isinstance(user, str) and 0 < len(user) <= 64 and type(ts) is int
                and isinstance(nonce, str) and 8 <= len(nonce) <= 64
                and isinstance(sig, str) and len(sig) <= 128):
            self._register_failed(addr, size, now, "BAD_REQUEST", "malformed REGISTER")
            return
        if abs(time.time() - ts) > self.opt.register_window:
            self._register_failed(addr, size, now, "AUTH_FAILED", None, user, "stale timestamp")
            return
        if self._pending_registers >= MAX_PENDING_REGISTERS:
            self._reject("register_overload")
            return
        self._pending_registers += 1
        self._spawn(self._register(user, ts, nonce, sig, addr, size))

    def _register_failed(self, addr: Address, size: int, now: float, code: str,
                         message: str | None, user: str | None = None,
                         why: str | None = None) -> None:
        self.failed.setdefault(addr, deque()).append(now)
        self.metrics.registers.labels(code.lower()).inc()
        if user is not None:
            log.info("REGISTER refused for user %r from %s: %s", user, _addr(addr), why)
        self._error(addr, code, size, message, now)

    async def _register(self, user: str, ts: int, nonce: str, sig: str, addr: Address,
                        size: int) -> None:
        try:
            creds = await self.run_db(self.store.user_credentials, user)
        finally:
            self._pending_registers -= 1
        now = time.monotonic()
        wall = time.time()
        used = self.nonces.setdefault(user, {})
        if creds is None or not protocol.signature_matches(creds[1], user, ts, nonce, sig):
            why = "unknown user" if creds is None else "bad signature"
            self._register_failed(addr, size, now, "AUTH_FAILED", None, user, why)
            return
        first_use = used.get(nonce)
        if first_use is not None and wall - first_use <= self.opt.nonce_ttl:
            self._register_failed(addr, size, now, "AUTH_FAILED", None, user, "replayed nonce")
            return
        used[nonce] = wall
        user_id = creds[0]
        state = self.users.get(user_id)
        if state is None:
            budget = float(self.opt.send_budget)
            state = self.users[user_id] = UserState(
                user_id, budget, budget / self.opt.budget_window, budget, now)
        for old in [s for s in state.sessions.values() if s.addr == addr]:
            self._close(old, "replaced by a new REGISTER from the same address")
        session = Session(secrets.token_urlsafe(18), user_id, user, addr, now)
        self.sessions[session.id] = session
        state.sessions[session.id] = session
        self.addr_sessions[addr] = self.addr_sessions.get(addr, 0) + 1
        self.metrics.registers.labels("ok").inc()
        try:
            unread, page = await self.run_db(self.store.unread, user_id, self.opt.catch_up_page)
        except Exception as exc:
            log.warning("unread notifications of user %s unavailable: %s", user_id, exc)
            unread, page = 0, []
        if session.closed:
            return
        hb = self.opt.heartbeat
        self._send(protocol.encode({
            "type": "REGISTERED", "session": session.id,
            "heartbeat": int(hb) if float(hb).is_integer() else hb, "unread": unread,
        }), addr)
        log.info("user %s (%s) registered session %s from %s, %d unread", user_id, user,
                 session.short, _addr(addr), unread)
        self._catch_up(session, page)

    # --- pushing --------------------------------------------------------------------------

    def _catch_up(self, session: Session, page: list[Notice]) -> None:
        for notice in page:
            if notice.id not in session.seen:
                session.seen.add(notice.id)
                session.queue.append(notice)
        if len(page) >= self.opt.catch_up_page:
            session.more_after = page[-1].id
        else:
            session.more_after = None
            session.catching_up = False
            live, session.live_pending = session.live_pending, []
            for notice in live:
                if notice.id not in session.seen:
                    session.seen.add(notice.id)
                    session.queue.append(notice)
        self._schedule_pump(session, 0.0)

    async def _load_more(self, session: Session) -> None:
        after = session.more_after or 0
        try:
            _, page = await self.run_db(self.store.unread, session.user_id,
                                        self.opt.catch_up_page, after)
        except Exception as exc:
            log.warning("unread notifications of user %s unavailable: %s", session.user_id, exc)
            page = []
        finally:
            session.loading = False
        if not session.closed:
            self._catch_up(session, page)

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
                    self._schedule_pump(session, 0.0)

    def _schedule_pump(self, session: Session, delay: float) -> None:
        if session.pump_handle is not None or session.closed:
            return
        if delay <= 0:
            session.pump_handle = self.loop.call_soon(self._pump, session)
        else:
            session.pump_handle = self.loop.call_later(delay, self._pump, session)

    def _pump(self, session: Session) -> None:
        session.pump_handle = None
        if session.closed:
            return
        state = self.users[session.user_id]
        now = time.monotonic()
        sent = 0
        while session.queue and sent < self.opt.push_burst:
            notice = session.queue[0]
            if not state.charge(notice.id, now):
                self._schedule_pump(session, state.wait_for_token(now))
                return
            session.queue.popleft()
            self._push(session, notice)
            sent += 1
        if session.queue:
            self._schedule_pump(session, self.opt.push_pace)
        elif session.more_after is not None and not session.loading:
            session.loading = True
            self._spawn(self._load_more(session))

    def _push(self, session: Session, notice: Notice) -> None:
        data = protocol.encode(notice.to_message())
        timeout = self.rng.uniform(self.opt.ack_timeout,
                                   self.opt.ack_timeout * self.opt.ack_random_factor)
        item = Inflight(notice.id, data, timeout)
        item.handle = self.loop.call_later(timeout, self._retransmit, session, item)
        session.inflight[notice.id] = item
        self._send(data, session.addr)
        self.metrics.sent.inc()
        log.debug("notification %s pushed to user %s session %s", notice.id, session.user_id,
                  session.short)

    def _retransmit(self, session: Session, item: Inflight) -> None:
        if session.closed or session.inflight.get(item.id) is not item:
            return
        if item.attempts >= self.opt.max_retransmit:
            del session.inflight[item.id]
            self.metrics.given_up.inc()
            log.info("notification %s unacknowledged by session %s of user %s after %d retries;"
                     " it stays unread", item.id, session.short, session.user_id, item.attempts)
            return
        item.attempts += 1
        item.timeout *= 2
        item.handle = self.loop.call_later(item.timeout, self._retransmit, session, item)
        self._send(item.data, session.addr)
        self.metrics.retransmitted.inc()

    def remote_acks(self, pairs: Iterable[tuple[int, int]]) -> None:
        """ACKs taken by another server process: stop retransmitting those here."""
        for user_id, nid in pairs:
            state = self.users.get(user_id)
            if state is None:
                continue
            for session in state.sessions.values():
                item = session.inflight.pop(nid, None)
                if item is not None and item.handle is not None:
                    item.handle.cancel()

    # --- sessions -------------------------------------------------------------------------

    def online_user_ids(self) -> set[int]:
        return {uid for uid, state in self.users.items() if state.sessions}

    def has_session(self, addr: Address) -> bool:
        return self.addr_sessions.get(addr, 0) > 0

    def _close(self, session: Session, why: str) -> None:
        if session.closed:
            return
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
        log.info("session %s of user %s at %s ended: %s", session.short, session.user_id,
                 _addr(session.addr), why)

    async def _sweep(self) -> None:
        interval = max(0.05, min(self.opt.heartbeat / 2, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            wall = time.time()
            limit = 3 * self.opt.heartbeat
            for session in [s for s in self.sessions.values() if now - s.last_seen > limit]:
                self._close(session, f"no datagram for {limit:g} s")
            for user, used in list(self.nonces.items()):
                fresh = {n: at for n, at in used.items() if wall - at <= self.opt.nonce_ttl}
                if fresh:
                    self.nonces[user] = fresh
                else:
                    del self.nonces[user]
            self.last_error = {a: at for a, at in self.last_error.items()
                               if now - at < self.opt.error_interval}
            for addr in [a for a, q in self.failed.items()
                         if not q or now - q[-1] > self.opt.failed_register_window]:
                del self.failed[addr]
            for uid, state in list(self.users.items()):
                state.wait_for_token(now)  # refills the bucket
                if not state.sessions and state.tokens >= state.capacity:
                    # Forget an idle user only once the budget has fully recovered.
                    del self.users[uid]
                else:
                    state.prune(now, self.opt.budget_window)

    async def _ack_writer(self) -> None:
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        batch, self._acks = self._acks, []
        known, self._known_acks = self._known_acks, []
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

    async def close(self) -> None:
        """Stop pushing; ACKs already received are written, unacknowledged stay unread."""
        for task in (self._sweeper, self._ack_task):
            task.cancel()
        for session in list(self.sessions.values()):
            self._close(session, "server stopping")
        await self._flush_acks()
        for task in list(self._tasks):
            task.cancel()
        if self.transport is not None:
            self.transport.close()
