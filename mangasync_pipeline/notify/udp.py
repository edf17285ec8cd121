"""The UDP side of the notification server (PROTOCOL.md, "UDP"): an asyncio datagram endpoint.

Sessions, pushes, retransmissions and budgets live in memory on the event loop. Triggers' and
ACKs' database work goes through `run_db` (the server's pool); ACKs are written in batches so
that thousands of clients acknowledging at once cost a handful of transactions. REGISTER never
waits on that pool: users are checked against an in-memory table (`UserDirectory`), and the
nonces of accepted REGISTERs are recorded in batches on the directory's own pool.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from mangasync_pipeline.notify import protocol, pubsub
from mangasync_pipeline.notify.directory import Reader, UserDirectory
from mangasync_pipeline.notify.limits import FailureBackoff, FairBudget, RefusalLog
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.sessions import (
    Address,
    Inflight,
    PushSlice,
    Session,
    UserState,
)
from mangasync_pipeline.notify.store import Notice, NotifyStore
from mangasync_pipeline.notify.timers import SlotTimers
from mangasync_pipeline.notify.tokens import master_key
from mangasync_pipeline.notify.users import USERS_CHANNEL

log = logging.getLogger("mangasync.notify.udp")
T = TypeVar("T")

MAX_ACK_IDS = 100
MAX_PENDING_REGISTERS = 2000  # REGISTERs awaiting the database; more are dropped
MAX_REGISTER_BATCH = 500
READ_BATCH = 256  # datagrams read per wake-up of the loop
PUMP_BATCH = 256  # sessions pumped per callback before other callbacks get the loop
RETRY_SLOTS = 40  # retransmission deadlines are grouped in slots of ack_timeout / this
MAX_GC_PAUSE = 1.0  # seconds a burst of pushes may hold off the cyclic garbage collector
RETRY_INTERVAL = 0.25  # seconds between two RETRYs to one address (a flood gets few)
MAX_RETRIED = 100_000  # addresses remembered for that
MAX_TS = 2**53  # a REGISTER's `ts` beyond this is malformed (and would not fit a float)


@dataclass
class _Accepted:
    """A REGISTER whose signature matched, waiting for its nonce to be recorded."""

    reader: Reader
    nonce: str
    addr: Address
    size: int


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
        self._rsock: socket.socket | None = None
        self._queued = False  # the transport holds datagrams the kernel would not take yet
        self._rejected: dict[str, Any] = {}
        self.loop = asyncio.get_running_loop()
        self.sessions: dict[str, Session] = {}
        self.users: dict[int, UserState] = {}
        self.last_error: dict[Address, float] = {}
        backoff = (options.backoff_base, options.backoff_max, options.failed_register_window)
        # Only after an address proved it receives (its cookie): so nobody can make the server
        # block another address, nor another reader.
        self.failed_pairs: FailureBackoff[tuple[str, int]] = FailureBackoff(
            options.failed_register_limit, *backoff)
        # Per address and port: readers behind one NAT share an IP, and one of them flooding
        # must not block the others. A new port needs a new cookie round trip first.
        self.refused_sources: FailureBackoff[Address] = FailureBackoff(
            options.source_refusal_limit, *backoff)
        self.register_budget = FairBudget(options.register_budget)
        self.refusals = RefusalLog(log.info)
        self.addr_sessions: dict[Address, int] = {}
        key = options.secret_key if options.secret_key is not None else master_key()
        self.cookies = protocol.RegisterCookies(key, options.cookie_period)
        self._retried: dict[Address, float] = {}
        self._retry_template = len(protocol.encode({"type": "RETRY",
                                                    "cookie": self.cookies.issue(("", 0))}))
        self.directory = UserDirectory(
            store.engine.url.render_as_string(hide_password=False), key,
            refresh_every=options.users_refresh, misses_per_second=options.user_misses)
        self._directory_ready = asyncio.Event()
        self._accepting: list[_Accepted] = []
        self._accept_handle: asyncio.TimerHandle | None = None
        self._validating: list[Session] = []
        self._templates: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        self._opened = self._ended = 0
        self._summary_at = time.monotonic()
        self._validate_handle: asyncio.TimerHandle | None = None
        # Sessions with something to push now, in the order they became ready.
        self._ready: deque[Session] = deque()
        self._ready_handle: asyncio.Handle | None = None
        self._gc_paused_at: float | None = None
        self._retries: SlotTimers[tuple[Session, Inflight]] = SlotTimers(
            self.loop, options.ack_timeout / RETRY_SLOTS, self._retransmit)
        self.rng = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_registers = 0
        self._acks: list[tuple[int, int]] = []
        self._known_acks: list[tuple[int, int]] = []  # ids this process pushed to that user
        self._ack_wakeup = asyncio.Event()
        self._ack_task = self._spawn(self._ack_writer())
        self._sweeper = self._spawn(self._sweep())
        self._directory_task = self._spawn(self._keep_directory())
        # Read at scrape time: counting on every REGISTER would make 10,000 of them quadratic.
        metrics.sessions.set_function(lambda: len(self.sessions))
        # (Scrapes run in a worker thread: copy the values in one step before iterating.)
        metrics.users_online.set_function(
            lambda: sum(1 for state in list(self.users.values()) if state.sessions))

    # --- plumbing -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # asyncio reads one datagram per wake-up of the loop; after a broadcast 10,000 ACKs
        # (or a flood) arrive at once, so each wake-up drains a batch through a duplicate of
        # the socket (same queue). Sends go through it too (`_send`).
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._rsock = sock.dup()
            self._rsock.setblocking(False)

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
        sock = self._rsock
        if sock is not None and not self._queued:
            # What the transport's sendto does first, without its checks for cases that do
            # not arise here: a tenth of the cost of a push in a broadcast.
            try:
                sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._queued = True  # kernel buffer full: the transport queues, in order
            except OSError as exc:
                self.error_received(exc)
                return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, addr)
            self._queued = transport.get_write_buffer_size() > 0

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
        counter = self._rejected.get(reason)
        if counter is None:  # labels() takes a lock and a lookup: once per reason
            counter = self._rejected[reason] = self.metrics.datagrams_rejected.labels(reason)
        counter.inc()

    # --- incoming -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        self._handle_safely(data, addr)
        sock = self._rsock
        if sock is None:
            return
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.error_received(exc)
                return
            self._handle_safely(data, addr)

    def _handle_safely(self, data: bytes, addr: Address) -> None:
        try:
            self._handle(data, addr)
        except Exception as exc:  # one bad datagram must never stop the endpoint
            self._reject("server_error")
            log.debug("datagram from %s could not be handled", _addr(addr), exc_info=True)
            self.refusals.note(addr[0], f"datagram could not be handled: "
                               f"{type(exc).__name__}: {str(exc)[:200]}", time.monotonic())

    def _handle(self, data: bytes, addr: Address) -> None:
        now = time.monotonic()
        if addr not in self.addr_sessions and self.refused_sources.blocked(addr, now):
            # A flooding source (it proved its address) costs a dict lookup, not a JSON parse.
            self._reject("register_limited")
            return
        msg = protocol.decode(data)
        if msg is None:
            self._reject("malformed")
            self.refusals.note(addr[0], "datagram refused: not a JSON object with a type", now)
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
        if not session.validated:
            if kind == "UNREGISTER":
                session.bytes_in += len(data)
            else:
                self._validate(session)
        if kind == "PING":
            self._send_to(session, protocol.encode({"type": "PONG"}))
            if session.validated and (session.stranded or session.inflight) \
                    and now >= session.redeliver_at:
                self._redeliver(session, now)
        elif kind == "UNREGISTER":
            self._close(session, "unregistered")
            self._send_to(session, protocol.encode({"type": "BYE"}))
        else:
            self._on_ack(session, msg.get("ids"), addr, len(data), now)

    def _send_to(self, session: Session, data: bytes) -> bool:
        """Send to a session's address, within the amplification limit until it is validated."""
        if not session.validated:
            if session.bytes_out + len(data) > self.opt.amplification * session.bytes_in:
                self._reject("amplification_limit")
                return False
            session.bytes_out += len(data)
        self._send(data, session.addr)
        return True

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
                other.inflight.pop(nid, None)  # its retransmission deadline then does nothing
                other.stranded.pop(nid, None)
                known = known or nid in other.seen
            (self._known_acks if known else self._acks).append((session.user_id, nid))
        if ids:
            log.debug("ACK of %s from user %s session %s", ids, session.user_id, session.short)
            self._ack_wakeup.set()

    # --- REGISTER -------------------------------------------------------------------------

    def _on_register(self, msg: dict[str, Any], addr: Address, size: int, now: float) -> None:
        user, ts, nonce, sig = msg.get("user"), msg.get("ts"), msg.get("nonce"), msg.get("sig")
        cookie = msg.get("cookie")
        ip = addr[0]
        if not self.cookies.valid(cookie, addr):
            # The address has not proved it receives: it may be forged. Answer with a cookie
            # (never longer than the REGISTER, at most one per address per RETRY_INTERVAL),
            # and nothing else: no lookup, no counter.
            self._reject("register_retry")
            last = self._retried.get(addr)
            if size >= self._retry_template and (last is None or now - last >= RETRY_INTERVAL):
                if len(self._retried) >= MAX_RETRIED:
                    self._retried.clear()
                self._retried[addr] = now
                self._send(protocol.encode({"type": "RETRY", "cookie": self.cookies.issue(addr)}),
                           addr)
            return
        if self.refused_sources.blocked(addr, now):
            self._reject("register_limited")
            return  # silently: the source keeps flooding, whatever its port
        if not self.register_budget.take(ip, now):
            self._reject("register_budget")  # (counted against the source as debt)
            return
        if not (isinstance(user, str) and 0 < len(user) <= 64 and type(ts) is int
                and -MAX_TS < ts < MAX_TS
                and isinstance(nonce, str) and 8 <= len(nonce) <= 64
                and isinstance(sig, str) and len(sig) <= 128):
            self.refused_sources.fail(addr, now)
            self._register_failed(addr, size, now, "BAD_REQUEST", "malformed REGISTER",
                                  why="malformed REGISTER")
            return
        if abs(time.time() - ts) > self.opt.register_window:
            self._register_failed(addr, size, now, "AUTH_FAILED", None, user, "stale timestamp")
            return
        pending = len(self._accepting) + self._pending_registers
        reader = self.directory.readers.get(user)
        if reader is not None and self.directory.loaded:
            self._verify(reader, user, ts, nonce, sig, cookie, addr, size, now, recheck=True)
        elif pending >= MAX_PENDING_REGISTERS:
            self._reject("register_overload")
        elif not self.directory.loaded or self.directory.may_look_up(user, now):
            self._pending_registers += 1
            self._spawn(self._look_up(user, ts, nonce, sig, cookie, addr, size))
        else:
            self._register_failed(addr, size, now, "AUTH_FAILED", None, user, "unknown user")

    async def _look_up(self, user: str, ts: int, nonce: str, sig: str, cookie: str,
                       addr: Address, size: int, *, fresh: bool = False,
                       delay: float = 0.0) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.directory.loaded:
                await asyncio.wait_for(self._directory_ready.wait(), 30)
            reader = None if fresh else self.directory.readers.get(user)
            if reader is None:
                reader = await self.directory.reread(user)
        except Exception as exc:
            log.warning("user %r could not be looked up (REGISTER dropped): %s", user, exc)
            return
        finally:
            self._pending_registers -= 1
        self._verify(reader, user, ts, nonce, sig, cookie, addr, size, time.monotonic(),
                     recheck=False, counted=fresh)

    def _verify(self, reader: Reader | None, user: str, ts: int, nonce: str, sig: str,
                cookie: str, addr: Address, size: int, now: float, *, recheck: bool,
                counted: bool = False) -> None:
        if reader is None:
            self._register_failed(addr, size, now, "AUTH_FAILED", None, user, "unknown user")
            return
        pair = (addr[0], reader.id)
        if not counted and self.failed_pairs.blocked(pair, now):  # (counted: checked before)
            self._reject("user_limited")
            # Guesses at this user from this source wait out the backoff; insisting meanwhile
            # is the source's own refusal.
            self.refused_sources.fail(addr, now)
            return
        if reader.token is None or not protocol.signature_matches(reader.token, user, ts,
                                                                  nonce, sig, cookie):
            if not counted:  # counted now, so a re-read below never widens the limits
                self.failed_pairs.fail(pair, now)
            delay = (self.directory.recheck_delay(user, now)
                     if recheck and self._pending_registers < MAX_PENDING_REGISTERS else None)
            if delay is not None:
                # The token may have been given or rotated a moment ago: read the user again.
                self._pending_registers += 1
                self._spawn(self._look_up(user, ts, nonce, sig, cookie, addr, size, fresh=True,
                                          delay=delay))
                return
            why = ("bad signature" if reader.token is not None else
                   "no token: run `mangasync users rotate-token` for this user")
            self._register_failed(addr, size, now, "AUTH_FAILED", None, user, why)
            return
        self._accepting.append(_Accepted(reader, nonce, addr, size))
        if len(self._accepting) >= MAX_REGISTER_BATCH:
            self._flush_accepting()
        elif self._accept_handle is None:
            self._accept_handle = self.loop.call_later(self.opt.register_batch_delay,
                                                       self._flush_accepting)

    def _register_failed(self, addr: Address, size: int, now: float, code: str,
                         message: str | None, user: str | None = None,
                         why: str | None = None) -> None:
        self.metrics.registers.labels(code.lower()).inc()
        if why is not None:
            self.refusals.note(addr[0], f"REGISTER refused for user {user!r} from "
                               f"{_addr(addr)}: {why}" if user is not None else
                               f"REGISTER refused from {_addr(addr)}: {why}", now)
        self._error(addr, code, size, message, now)

    def _flush_accepting(self) -> None:
        if self._accept_handle is not None:
            self._accept_handle.cancel()
            self._accept_handle = None
        batch, self._accepting = self._accepting, []
        if batch:
            self._pending_registers += len(batch)
            self._spawn(self._accept(batch))

    async def _accept(self, batch: list[_Accepted]) -> None:
        pairs = list(dict.fromkeys((a.reader.id, a.nonce) for a in batch))
        try:
            fresh, unread = await self.directory.run(
                self.directory.store.accept_registers, pairs,
                timedelta(seconds=self.opt.nonce_ttl))
        except Exception as exc:
            log.warning("%d REGISTERs dropped, their nonces could not be recorded (clients "
                        "retry): %s", len(batch), exc)
            return
        finally:
            self._pending_registers -= len(batch)
        now = time.monotonic()
        for item in batch:
            key = (item.reader.id, item.nonce)
            if key not in fresh:
                self.failed_pairs.fail((item.addr[0], item.reader.id), now)
                self._register_failed(item.addr, item.size, now, "AUTH_FAILED", None,
                                      item.reader.username, "replayed nonce")
                continue
            fresh.discard(key)  # a second copy in the same batch is a replay too
            self._open_session(item, unread.get(item.reader.id, 0), now)

    def _open_session(self, item: _Accepted, unread: int, now: float) -> None:
        user_id, addr = item.reader.id, item.addr
        state = self.users.get(user_id)
        if state is None:
            budget = float(self.opt.send_budget)
            state = self.users[user_id] = UserState(
                user_id, budget, budget / self.opt.budget_window, budget, now)
        for old in [s for s in state.sessions.values() if s.addr == addr]:
            # (Quietly: a client registering in a loop would otherwise write a line each time.)
            self._close(old, "replaced by a new REGISTER from the same address", quiet=True)
        while len(state.sessions) >= self.opt.max_sessions_per_user:
            oldest = next(iter(state.sessions.values()))  # (the dict is in REGISTER order)
            self._close(oldest, f"the user's {self.opt.max_sessions_per_user + 1}th device "
                                "registered", quiet=True)
        session = Session(secrets.token_urlsafe(18), user_id, item.reader.username, addr, now,
                          bytes_in=item.size)
        self.sessions[session.id] = session
        state.sessions[session.id] = session
        self.addr_sessions[addr] = self.addr_sessions.get(addr, 0) + 1
        self.metrics.registers.labels("ok").inc()
        hb = self.opt.heartbeat
        self._send_to(session, protocol.encode({
            "type": "REGISTERED", "session": session.id,
            "heartbeat": int(hb) if float(hb).is_integer() else hb, "unread": unread,
        }))
        self._opened += 1
        log.debug("user %s (%s) registered session %s from %s, %d unread", user_id,
                 item.reader.username, session.short, _addr(addr), unread)

    def _validate(self, session: Session) -> None:
        """The address echoed the session id: it receives. Remember it; start the catch-up."""
        session.validated = True
        self._validating.append(session)
        if self._validate_handle is None:
            # Gathered like REGISTERs: one query loads the first page of many sessions.
            self._validate_handle = self.loop.call_later(self.opt.register_batch_delay,
                                                         self._flush_validating)

    def _flush_validating(self) -> None:
        self._validate_handle = None
        batch, self._validating = self._validating, []
        if batch:
            self._spawn(self._first_page(batch))

    async def _first_page(self, batch: list[Session]) -> None:
        try:
            pages = await self.directory.run(self.directory.store.first_unread,
                                             {s.user_id for s in batch},
                                             self.opt.catch_up_page)
        except Exception as exc:
            log.warning("unread notifications of %d users unavailable: %s", len(batch), exc)
            pages = {}
        for session in batch:
            if not session.closed:
                self._catch_up(session, pages.get(session.user_id, []))

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
            _, page = await self.directory.run(self.directory.store.unread, session.user_id,
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
                    # (Pushing right here, in one loop, measured up to 2x slower than pumping
                    # from later callbacks: the HTTP answer then waits for every push.)
                    self._schedule_pump(session, 0.0)

    def _schedule_pump(self, session: Session, delay: float) -> None:
        if session.pump_handle is not None or session.ready or session.closed:
            return
        if delay > 0:
            session.pump_handle = self.loop.call_later(delay, self._pump_later, session)
            return
        # A broadcast readies thousands of sessions at once: they share one callback (a
        # handle each was a fifth of the time per push), in slices of PUMP_BATCH so the
        # HTTP answer and incoming ACKs are not held up behind all of them.
        session.ready = True
        self._ready.append(session)
        if self._ready_handle is None:
            self._ready_handle = self.loop.call_soon(self._pump_ready)
            self._pause_gc()

    def _pump_ready(self) -> None:
        self._ready_handle = None
        ready = self._ready
        now = time.monotonic()
        pushes = self._new_slice()
        for _ in range(min(PUMP_BATCH, len(ready))):
            session = ready.popleft()
            session.ready = False
            self._pump(session, now, pushes)
        self._arm(pushes)
        if ready:
            self._ready_handle = self.loop.call_soon(self._pump_ready)
            if self._gc_paused_at is not None and now - self._gc_paused_at > MAX_GC_PAUSE:
                self._resume_gc()
        else:
            self._resume_gc()

    def _pause_gc(self) -> None:
        """No cyclic garbage collection until the ready sessions are pumped (at most
        MAX_GC_PAUSE): a broadcast allocates 10,000 retransmission records that live until
        their ACK, which sets off collections of the whole heap (10,000 sessions) in the
        middle of it, 50 to 80 ms each, as long as the rest of the broadcast. Collected after."""
        if self._gc_paused_at is None and gc.isenabled():
            gc.disable()
            self._gc_paused_at = time.monotonic()

    def _resume_gc(self) -> None:
        if self._gc_paused_at is not None:
            self._gc_paused_at = None
            gc.enable()

    def _pump_later(self, session: Session) -> None:
        session.pump_handle = None
        pushes = self._new_slice()
        self._pump(session, time.monotonic(), pushes)
        self._arm(pushes)

    def _new_slice(self) -> PushSlice:
        """The first retransmission timeout is drawn from [ACK_TIMEOUT, ACK_TIMEOUT x
        ACK_RANDOM_FACTOR] (RFC 7252 4.8) once per slice of pushes rather than per push."""
        return PushSlice(self.rng.uniform(self.opt.ack_timeout,
                                          self.opt.ack_timeout * self.opt.ack_random_factor),
                         time.monotonic())

    def _arm(self, pushes: PushSlice) -> None:
        """Arm a slice's retransmissions and count its pushes, once for the whole slice."""
        if pushes.due:
            self._retries.add_many(pushes.timeout, pushes.due)
            self.metrics.sent.inc(len(pushes.due))

    def _pump(self, session: Session, now: float, pushes: PushSlice) -> None:
        """Push what the session's queue and its user's budget allow, into `pushes`."""
        if session.closed:
            return
        state = self.users[session.user_id]
        sent = 0
        while session.queue and sent < self.opt.push_burst:
            notice = session.queue[0]
            if not state.charge(notice.id, now):
                self._schedule_pump(session, state.wait_for_token(now))
                return
            session.queue.popleft()
            self._push_data(session, notice.id, self._encode(notice), pushes)
            sent += 1
        if session.queue:
            self._schedule_pump(session, self.opt.push_pace)
        elif session.more_after is not None and not session.loading:
            session.loading = True
            self._spawn(self._load_more(session))

    def _encode(self, notice: Notice) -> bytes:
        # One broadcast is thousands of notifications that differ only by id: encode once.
        key = notice.shared_fields()
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= 64:
                self._templates.clear()
            template = self._templates[key] = protocol.notification_template(
                notice.to_message())
        return template[0] + str(notice.id).encode() + template[1]

    def _push_data(self, session: Session, nid: int, data: bytes, pushes: PushSlice) -> None:
        """Send; `_arm(pushes)` arms the retransmission and counts it."""
        item = Inflight(nid, data, pushes.timeout, pushes.at)
        session.inflight[nid] = item
        pushes.due.append((session, item))
        self._send(data, session.addr)

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
        self._retries.add(item.timeout, due)
        self._send(item.data, session.addr)
        self.metrics.retransmitted.inc()

    def _redeliver(self, session: Session, now: float) -> None:
        """The session is alive (it PINGed): what it has not acknowledged goes again now, with
        its retransmissions starting over from the first timeout (one sent within the last
        ACK timeout is not sent again yet, but its next retry comes a first timeout after
        that send). Waiting out a backoff grown during the loss would hold back a reader
        whose path plainly works again; a PING flood gets no more than one round per ACK
        timeout."""
        session.redeliver_at = now + self.opt.ack_timeout
        pushes = self._new_slice()
        due: list[int] = []
        for item in list(session.inflight.values()):
            if now - item.sent_at >= self.opt.ack_timeout:
                due.append(item.id)
            elif item.attempts:
                fresh = Inflight(item.id, item.data, pushes.timeout, item.sent_at)
                session.inflight[item.id] = fresh  # the old deadline then does nothing
                self._retries.add(max(0.0, item.sent_at + pushes.timeout - now),
                                  (session, fresh))
        # Then those whose retries ran out; at most one send budget per PING, oldest first
        # (the rest at the next one).
        due.sort()
        budget = self.opt.send_budget
        batch = due[:budget] + sorted(session.stranded)[:max(0, budget - len(due))]
        if not batch:
            return
        log.debug("%d notifications sent again to session %s of user %s after its PING",
                  len(batch), session.short, session.user_id)
        for nid in batch:
            data = session.stranded.pop(nid, None)
            if data is None:
                data = session.inflight[nid].data
            self._push_data(session, nid, data, pushes)
        self._arm(pushes)

    def remote_acks(self, pairs: Iterable[tuple[int, int]]) -> None:
        """ACKs taken by another server process: stop retransmitting those here."""
        for user_id, nid in pairs:
            state = self.users.get(user_id)
            if state is None:
                continue
            for session in state.sessions.values():
                session.inflight.pop(nid, None)
                session.stranded.pop(nid, None)

    # --- sessions -------------------------------------------------------------------------

    def online_user_ids(self) -> set[int]:
        return {uid for uid, state in self.users.items() if state.sessions}

    def has_session(self, addr: Address) -> bool:
        return self.addr_sessions.get(addr, 0) > 0

    def _close(self, session: Session, why: str, quiet: bool = False) -> None:
        if session.closed:
            return
        self._ended += 1
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
            _addr(session.addr), why)

    async def _sweep(self) -> None:
        interval = max(0.05, min(self.opt.heartbeat / 2, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            limit = 3 * self.opt.heartbeat
            for session in [s for s in self.sessions.values() if now - s.last_seen > limit]:
                self._close(session, f"no datagram for {limit:g} s", quiet=True)
            if now - self._summary_at >= 60 and (self._opened or self._ended):
                # One line a minute, not one per session: 10,000 readers would drown the log.
                log.info("sessions: %d open; %d opened and %d ended since the last report",
                         len(self.sessions), self._opened, self._ended)
                self._opened = self._ended = 0
                self._summary_at = now
            self.last_error = {a: at for a, at in self.last_error.items()
                               if now - at < self.opt.error_interval}
            self._retried = {a: at for a, at in self._retried.items()
                             if now - at < RETRY_INTERVAL}
            self.failed_pairs.sweep(now)
            self.refused_sources.sweep(now)
            if now - self.refusals.started >= self.refusals.period:
                self.refusals.flush(now)
            for uid, state in list(self.users.items()):
                state.wait_for_token(now)  # refills the bucket
                if not state.sessions and state.tokens >= state.capacity:
                    # Forget an idle user only once the budget has fully recovered.
                    del self.users[uid]
                else:
                    state.prune(now, self.opt.budget_window)

    async def _keep_directory(self) -> None:
        """Load the users table, then keep it and the nonce table fresh."""
        listener: asyncio.Task[None] | None = None
        if self.store.is_postgres:
            dsn = pubsub.libpq_dsn(self.store.engine.url.render_as_string(hide_password=False))
            listener = self._spawn(pubsub.listen_channel(dsn, USERS_CHANNEL, self._user_changed))
        purged_at = time.monotonic()
        try:
            while True:
                try:
                    await self.directory.refresh()
                    self._directory_ready.set()
                    if time.monotonic() - purged_at >= self.opt.nonce_ttl / 2:
                        purged_at = time.monotonic()
                        purged = await self.directory.run(
                            self.directory.store.purge_nonces,
                            timedelta(seconds=self.opt.nonce_ttl / 10))
                        log.debug("%d expired REGISTER nonces purged", purged)
                except Exception as exc:
                    log.warning("users table not re-read: %s", exc)
                # PostgreSQL announces changes; the re-read there only covers missed ones.
                await asyncio.sleep(self.opt.users_refresh * (12 if listener else 1))
        finally:
            if listener is not None:
                listener.cancel()

    def _user_changed(self, username: str) -> None:
        self._spawn(self.directory.reread(username))

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
        for task in (self._sweeper, self._ack_task, self._directory_task):
            task.cancel()
        if self.sessions:
            log.info("%d sessions ended: server stopping", len(self.sessions))
        for session in list(self.sessions.values()):
            self._close(session, "server stopping", quiet=True)
        self._retries.close()
        self._resume_gc()
        await self._flush_acks()
        for task in list(self._tasks):
            task.cancel()
        if self.transport is not None:
            self.transport.close()
        if self._rsock is not None:
            self._rsock.close()
            self._rsock = None
        await asyncio.get_running_loop().run_in_executor(None, self.directory.close)
