"""REGISTER (PROTOCOL.md, "UDP", version 4): the cookie round trip, the limits, the user's
token and the nonce, up to the accepted REGISTER that opens a session.

In order, each step costing more than the one before: a REGISTER without a valid cookie gets a
`RETRY` and nothing else (its address may be forged: no lookup, no counter); a source that
keeps failing is dropped, then one over its share of the REGISTER budget; a malformed or stale
one is refused; the user is looked up in an in-memory table (`UserDirectory`, never the
server's pool), failures counting per (address, user); a matching signature's nonce is recorded
in batches on the directory's own pool, and a replayed one is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mangasync_pipeline.notify import protocol, pubsub
from mangasync_pipeline.notify.directory import Reader, UserDirectory
from mangasync_pipeline.notify.limits import FailureBackoff, FairBudget, RefusalLog, source_of
from mangasync_pipeline.notify.message_checks import register_fields_valid
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.replies import RetryReplies
from mangasync_pipeline.notify.session_table import show
from mangasync_pipeline.notify.sessions import Address
from mangasync_pipeline.notify.store import NotifyStore
from mangasync_pipeline.notify.users import USERS_CHANNEL

log = logging.getLogger("mangasync.notify.udp")

MAX_PENDING_REGISTERS = 2000  # REGISTERs awaiting the database; more are dropped
MAX_REGISTER_BATCH = 500


def _pair(addr: Address, reader_id: int) -> tuple[str, int]:
    """What failed REGISTERs count against: the source (an IPv6 /64) and the reader."""
    return source_of(addr[0]), reader_id


@dataclass
class Accepted:
    """A REGISTER whose signature matched, waiting for its nonce to be recorded."""

    reader: Reader
    nonce: str
    addr: Address
    size: int


Reply = Callable[[Address, str, int, "str | None", float], None]


class Registrar:
    """Takes REGISTERs; calls `open_session(accepted, unread, now)` for each accepted one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: NotifyStore,
                 options: ServerOptions, metrics: NotifyMetrics, key: bytes,
                 refusals: RefusalLog, *, send: Callable[[bytes, Address], None],
                 error: Reply, reject: Callable[[str], None],
                 spawn: Callable[[Awaitable[Any]], Any],
                 open_session: Callable[[Accepted, int, float], None]) -> None:
        self.loop = loop
        self.store = store
        self.opt = options
        self.metrics = metrics
        self.refusals = refusals
        self.send, self.error, self.reject, self.spawn = send, error, reject, spawn
        self.open_session = open_session
        backoff = (options.backoff_base, options.backoff_max, options.failed_register_window)
        # Only after an address proved it receives (its cookie): so nobody can make the server
        # block another address, nor another reader.
        self.failed_pairs: FailureBackoff[tuple[str, int]] = FailureBackoff(
            options.failed_register_limit, *backoff)
        # Per address and port: readers behind one NAT share an IP, and one of them flooding
        # must not block the others. A new port needs a new cookie round trip first.
        self.refused_sources: FailureBackoff[Address] = FailureBackoff(
            options.source_refusal_limit, *backoff)
        self.budget = FairBudget(options.register_budget)
        self.cookies = protocol.RegisterCookies(key, options.cookie_period)
        self.retries = RetryReplies(self.cookies)
        self.directory = UserDirectory(
            store.engine.url.render_as_string(hide_password=False), key,
            refresh_every=options.users_refresh, misses_per_second=options.user_misses)
        self._directory_ready = asyncio.Event()
        self._accepting: list[Accepted] = []
        self._accept_handle: asyncio.TimerHandle | None = None
        self.pending = 0  # REGISTERs waiting on the database (lookups and nonces)

    def on_register(self, msg: dict[str, Any], addr: Address, size: int, now: float) -> None:
        user, ts, nonce, sig = msg.get("user"), msg.get("ts"), msg.get("nonce"), msg.get("sig")
        cookie = msg.get("cookie")
        source = source_of(addr[0])
        if not self.cookies.valid(cookie, addr):
            # The address has not proved it receives: it may be forged. Answer with a cookie
            # and nothing else: no lookup, no counter.
            self.reject("register_retry")
            data = self.retries.reply(addr, size, now)
            if data is not None:
                self.send(data, addr)
            return
        if self.refused_sources.blocked(addr, now):
            self.reject("register_limited")
            return  # silently: the source keeps flooding, whatever its port
        if not self.budget.take(source, now):
            self.reject("register_budget")  # (counted against the source as debt)
            return
        if not register_fields_valid(user, ts, nonce, sig):
            self.refused_sources.fail(addr, now)
            self.failed(addr, size, now, "BAD_REQUEST", "malformed REGISTER",
                        why="malformed REGISTER")
            return
        if abs(time.time() - ts) > self.opt.register_window:
            self.failed(addr, size, now, "AUTH_FAILED", None, user, "stale timestamp")
            return
        pending = len(self._accepting) + self.pending
        reader = self.directory.readers.get(user)
        if reader is not None and self.directory.loaded:
            self._verify(reader, user, ts, nonce, sig, cookie, addr, size, now, recheck=True)
        elif pending >= MAX_PENDING_REGISTERS:
            self.reject("register_overload")
        elif not self.directory.loaded or self.directory.may_look_up(user, now):
            self.pending += 1
            self.spawn(self._look_up(user, ts, nonce, sig, cookie, addr, size))
        else:
            self.failed(addr, size, now, "AUTH_FAILED", None, user, "unknown user")

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
            self.pending -= 1
        self._verify(reader, user, ts, nonce, sig, cookie, addr, size, time.monotonic(),
                     recheck=False, counted=fresh)

    def _verify(self, reader: Reader | None, user: str, ts: int, nonce: str, sig: str,
                cookie: str, addr: Address, size: int, now: float, *, recheck: bool,
                counted: bool = False) -> None:
        if reader is None:
            self.failed(addr, size, now, "AUTH_FAILED", None, user, "unknown user")
            return
        pair = _pair(addr, reader.id)
        if not counted and self.failed_pairs.blocked(pair, now):  # (counted: checked before)
            self.reject("user_limited")
            # Guesses at this user from this source wait out the backoff; insisting meanwhile
            # is the source's own refusal.
            self.refused_sources.fail(addr, now)
            return
        if reader.token is None or not protocol.signature_matches(reader.token, user, ts,
                                                                  nonce, sig, cookie):
            if not counted:  # counted now, so a re-read below never widens the limits
                self.failed_pairs.fail(pair, now)
            delay = (self.directory.recheck_delay(user, now)
                     if recheck and self.pending < MAX_PENDING_REGISTERS else None)
            if delay is not None:
                # The token may have been given or rotated a moment ago: read the user again.
                self.pending += 1
                self.spawn(self._look_up(user, ts, nonce, sig, cookie, addr, size, fresh=True,
                                         delay=delay))
                return
            why = ("bad signature" if reader.token is not None else
                   "no token: run `mangasync users rotate-token` for this user")
            self.failed(addr, size, now, "AUTH_FAILED", None, user, why)
            return
        self._accepting.append(Accepted(reader, nonce, addr, size))
        if len(self._accepting) >= MAX_REGISTER_BATCH:
            self._flush_accepting()
        elif self._accept_handle is None:
            self._accept_handle = self.loop.call_later(self.opt.register_batch_delay,
                                                       self._flush_accepting)

    def failed(self, addr: Address, size: int, now: float, code: str, message: str | None,
               user: str | None = None, why: str | None = None) -> None:
        """A refused REGISTER: counted, logged (once a minute per source) and answered."""
        self.metrics.registers.labels(code.lower()).inc()
        if why is not None:
            self.refusals.note(addr[0], f"REGISTER refused for user {user!r} from "
                               f"{show(addr)}: {why}" if user is not None else
                               f"REGISTER refused from {show(addr)}: {why}", now)
        self.error(addr, code, size, message, now)

    def _flush_accepting(self) -> None:
        if self._accept_handle is not None:
            self._accept_handle.cancel()
            self._accept_handle = None
        batch, self._accepting = self._accepting, []
        if batch:
            self.pending += len(batch)
            self.spawn(self._accept(batch))

    async def _accept(self, batch: list[Accepted]) -> None:
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
            self.pending -= len(batch)
        now = time.monotonic()
        for item in batch:
            key = (item.reader.id, item.nonce)
            if key not in fresh:
                self.failed_pairs.fail(_pair(item.addr, item.reader.id), now)
                self.failed(item.addr, item.size, now, "AUTH_FAILED", None,
                            item.reader.username, "replayed nonce")
                continue
            fresh.discard(key)  # a second copy in the same batch is a replay too
            self.open_session(item, unread.get(item.reader.id, 0), now)

    async def keep_directory(self) -> None:
        """Load the users table, then keep it and the nonce table fresh."""
        listener: asyncio.Task[None] | None = None
        if self.store.is_postgres:
            dsn = pubsub.libpq_dsn(self.store.engine.url.render_as_string(hide_password=False))
            listener = self.spawn(pubsub.listen_channel(dsn, USERS_CHANNEL, self._user_changed))
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
        self.spawn(self.directory.reread(username))

    def sweep(self, now: float) -> None:
        self.retries.sweep(now)
        self.failed_pairs.sweep(now)
        self.refused_sources.sweep(now)
