"""The UDP side of the notification server (PROTOCOL.md, "UDP"): an asyncio datagram endpoint.

This module reads each datagram and hands it to the part that holds its rules:

- `datagrams`: the socket, read in batches and written straight;
- `message_checks` and `replies`: what a REGISTER and an ACK must carry; ERROR and RETRY,
  paced per address and never longer than their cause;
- `registration`: REGISTER, from the cookie round trip to the accepted nonce;
- `session_table`: the sessions and users held here, their expiry;
- `catch_up`, `pushes`, `retransmission`, `gc_pause`: unread pages, live pushes paced by the
  user's budget, retransmission and redelivery, the collector held off during a burst;
- `ack_batch`: what an ACK cancels, and its database write in batches.

Sessions, pushes, retransmissions and budgets live in memory on the event loop. Triggers' and
ACKs' database work goes through `run_db` (the server's pool); REGISTER never waits on that
pool (`registration`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.ack_batch import AckBatch, cancel_remote
from mangasync_pipeline.notify.catch_up import CatchUp
from mangasync_pipeline.notify.datagrams import DatagramSocket, log_error
from mangasync_pipeline.notify.limits import RefusalLog
from mangasync_pipeline.notify.message_checks import MAX_ACK_IDS, ack_ids_valid
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.pushes import Pushes
from mangasync_pipeline.notify.registration import Accepted, Registrar
from mangasync_pipeline.notify.replies import ErrorReplies
from mangasync_pipeline.notify.retransmission import Retransmissions
from mangasync_pipeline.notify.session_table import SessionTable, show
from mangasync_pipeline.notify.sessions import Address, Session
from mangasync_pipeline.notify.store import Notice, NotifyStore
from mangasync_pipeline.notify.tokens import master_key

log = logging.getLogger("mangasync.notify.udp")
T = TypeVar("T")

_PONG = protocol.encode({"type": "PONG"})
_BYE = protocol.encode({"type": "BYE"})


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, store: NotifyStore, options: ServerOptions, metrics: NotifyMetrics,
                 run_db: Callable[..., Awaitable[Any]]) -> None:
        self.store = store
        self.opt = options
        self.metrics = metrics
        self.run_db = run_db
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.socket = DatagramSocket()
        self._send = self.socket.send
        self._rejected: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.refusals = RefusalLog(log.info)
        self.errors = ErrorReplies(options.error_interval)
        self.table = SessionTable(options, time.monotonic())
        self.sessions = self.table.sessions
        self.users = self.table.users
        self._addr_sessions = self.table.addr_sessions  # (read for every datagram)
        key = options.secret_key if options.secret_key is not None else master_key()
        self.registrar = Registrar(
            self.loop, store, options, metrics, key, self.refusals, send=self._send,
            error=self._error, reject=self._reject, spawn=self._spawn,
            open_session=self._open_session)
        self.directory = self.registrar.directory
        self.failed_pairs = self.registrar.failed_pairs
        self.refused_sources = self.registrar.refused_sources
        self.register_budget = self.registrar.budget
        self.retransmissions = Retransmissions(self.loop, options, metrics, self._send)
        self.pushes = Pushes(self.loop, options, self.users, self.retransmissions,
                             self._load_more)
        self.catch_up = CatchUp(self.loop, options, self.directory, self._spawn,
                                self.pushes.schedule)
        self.acks = AckBatch(store, run_db, metrics)
        self._ack_task = self._spawn(self.acks.run())
        self._sweeper = self._spawn(self._sweep())
        self._directory_task = self._spawn(self.registrar.keep_directory())
        # Read at scrape time: counting on every REGISTER would make 10,000 of them quadratic.
        metrics.sessions.set_function(lambda: len(self.sessions))
        # (Scrapes run in a worker thread: copy the values in one step before iterating.)
        metrics.users_online.set_function(
            lambda: sum(1 for state in list(self.users.values()) if state.sessions))

    @property
    def _pending_registers(self) -> int:
        return self.registrar.pending

    # --- plumbing -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.socket.attach(transport)  # type: ignore[arg-type]

    def error_received(self, exc: Exception) -> None:
        log_error(exc)

    def _spawn(self, coro: Awaitable[T]) -> asyncio.Task[T]:
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("udp task failed: %s", task.exception(), exc_info=task.exception())

    def _error(self, addr: Address, code: str, cause_len: int, message: str | None,
               now: float) -> None:
        data = self.errors.reply(addr, code, cause_len, message, now)
        if data is not None:
            self._send(data, addr)

    def _reject(self, reason: str) -> None:
        counter = self._rejected.get(reason)
        if counter is None:  # labels() takes a lock and a lookup: once per reason
            counter = self._rejected[reason] = self.metrics.datagrams_rejected.labels(reason)
        counter.inc()

    # --- incoming -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        self._handle_safely(data, addr)
        self.socket.read_more(self._handle_safely)

    def _handle_safely(self, data: bytes, addr: Address) -> None:
        try:
            self._handle(data, addr)
        except Exception as exc:  # one bad datagram must never stop the endpoint
            self._reject("server_error")
            log.debug("datagram from %s could not be handled", show(addr), exc_info=True)
            self.refusals.note(addr[0], f"datagram could not be handled: "
                               f"{type(exc).__name__}: {str(exc)[:200]}", time.monotonic())

    def _handle(self, data: bytes, addr: Address) -> None:
        now = time.monotonic()
        if addr not in self._addr_sessions and self.refused_sources.blocked(addr, now):
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
            self.registrar.on_register(msg, addr, len(data), now)
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
                self.catch_up.validated(session)
        if kind == "PING":
            self._send_to(session, _PONG)
            if session.validated and (session.stranded or session.inflight) \
                    and now >= session.redeliver_at:
                self.retransmissions.redeliver(session, now)
        elif kind == "UNREGISTER":
            self.table.close(session, "unregistered")
            self._send_to(session, _BYE)
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
        if not ack_ids_valid(ids):
            self._reject("bad_ack")
            self._error(addr, "BAD_REQUEST", size, f"ids: list of at most {MAX_ACK_IDS} ids",
                        now)
            return
        user = self.users.get(session.user_id)
        self.acks.take(session, user.sessions.values() if user else [session], ids)

    def _open_session(self, item: Accepted, unread: int, now: float) -> None:
        user_id, addr = item.reader.id, item.addr
        session = self.table.open(user_id, item.reader.username, addr, item.size, now)
        self.metrics.registers.labels("ok").inc()
        hb = self.opt.heartbeat
        self._send_to(session, protocol.encode({
            "type": "REGISTERED", "session": session.id,
            "heartbeat": int(hb) if float(hb).is_integer() else hb, "unread": unread,
        }))
        log.debug("user %s (%s) registered session %s from %s, %d unread", user_id,
                  item.reader.username, session.short, show(addr), unread)

    def _load_more(self, session: Session) -> None:
        self.catch_up.load_more(session)

    # --- what the server calls ------------------------------------------------------------

    def deliver(self, notices: Iterable[Notice]) -> None:
        """Push stored notifications to the sessions of their users held by this process."""
        self.pushes.deliver(notices)

    def remote_acks(self, pairs: Iterable[tuple[int, int]]) -> None:
        """ACKs taken by another server process: stop retransmitting those here."""
        cancel_remote(self.users, pairs)

    def online_user_ids(self) -> set[int]:
        return self.table.online_user_ids()

    def has_session(self, addr: Address) -> bool:
        return self.table.has_session(addr)

    async def _sweep(self) -> None:
        interval = max(0.05, min(self.opt.heartbeat / 2, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.table.expire(now)
            self.table.report(now)
            self.errors.sweep(now)
            self.registrar.sweep(now)
            if now - self.refusals.started >= self.refusals.period:
                self.refusals.flush(now)
            self.table.sweep_users(now)

    async def close(self) -> None:
        """Stop pushing; ACKs already received are written, unacknowledged stay unread."""
        for task in (self._sweeper, self._ack_task, self._directory_task):
            task.cancel()
        self.table.close_all("server stopping")
        self.retransmissions.close()
        self.pushes.close()
        await self.acks.flush()
        for task in list(self._tasks):
            task.cancel()
        self.socket.close()
        await asyncio.get_running_loop().run_in_executor(None, self.directory.close)
