"""REGISTER from the cookie round trip to the recorded nonce (notify/registration.py), driven
directly against a real database: what each step answers, and what opens a session."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine

from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.limits import RefusalLog
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.registration import Registrar
from mangasync_pipeline.notify.sessions import Address
from mangasync_pipeline.notify.store import NotifyStore
from mangasync_pipeline.notify.testing import fast_options
from mangasync_pipeline.notify.users import add_user

KEY = b"k" * 32
ADDR = ("127.0.0.2", 4000)


class _Run:
    """A Registrar on a running loop, with what it sends, refuses and opens written down."""

    def __init__(self, engine: Engine) -> None:
        self.sent: list[tuple[dict[str, Any] | None, Address]] = []
        self.rejected: list[str] = []
        self.opened: list[tuple[str, Address, int]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.registrar = Registrar(
            asyncio.get_running_loop(), NotifyStore(engine), fast_options(), NotifyMetrics(),
            KEY, RefusalLog(lambda line: None),
            send=lambda data, addr: self.sent.append((protocol.decode(data), addr)),
            error=self.error, reject=self.rejected.append, spawn=self.spawn,
            open_session=lambda a, unread, now: self.opened.append(
                (a.reader.username, a.addr, unread)))
        self.spawn(self.registrar.keep_directory())

    def error(self, addr: Address, code: str, size: int, message: str | None,
              now: float) -> None:
        self.sent.append(({"type": "ERROR", "code": code}, addr))

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    def register(self, msg: dict[str, Any], addr: Address = ADDR) -> None:
        data = protocol.encode(msg)
        self.registrar.on_register(protocol.decode(data), addr, len(data),  # type: ignore[arg-type]
                                   asyncio.get_running_loop().time())

    async def settle(self) -> None:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not self.registrar.pending and not self.registrar._accepting:
                return

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.registrar.directory.close()


def _with_registrar(engine: Engine, body: Callable[[_Run], Awaitable[None]]) -> None:
    async def main() -> None:
        run = _Run(engine)
        try:
            await body(run)
        finally:
            await run.close()

    asyncio.run(main())


def test_a_register_without_a_cookie_gets_a_retry_and_nothing_else(engine: Engine) -> None:
    _, token = add_user(engine, "alice", KEY)

    async def body(run: _Run) -> None:
        run.register(protocol.register_message("alice", token))
        await run.settle()
        assert [(m or {}).get("type") for m, _ in run.sent] == ["RETRY"]
        assert run.rejected == ["register_retry"] and run.opened == []
        assert run.registrar.failed_pairs.records == {}

    _with_registrar(engine, body)


def test_a_signed_register_with_its_cookie_opens_one_session_and_its_replay_none(
        engine: Engine) -> None:
    _, token = add_user(engine, "alice", KEY)

    async def body(run: _Run) -> None:
        cookie = run.registrar.cookies.issue(ADDR)
        msg = protocol.register_message("alice", token, cookie=cookie)
        run.register(msg)
        await run.settle()
        assert run.opened == [("alice", ADDR, 0)] and run.sent == []
        run.register(msg)  # the same nonce again
        await run.settle()
        assert run.opened == [("alice", ADDR, 0)]
        assert run.sent == [({"type": "ERROR", "code": "AUTH_FAILED"}, ADDR)]

    _with_registrar(engine, body)


def test_a_cookie_of_another_address_or_a_wrong_token_is_refused(engine: Engine) -> None:
    add_user(engine, "alice", KEY)

    async def body(run: _Run) -> None:
        elsewhere = run.registrar.cookies.issue(("127.0.0.3", 4000))
        run.register(protocol.register_message("alice", "not-the-token", cookie=elsewhere))
        assert [(m or {}).get("type") for m, _ in run.sent] == ["RETRY"]
        run.register(protocol.register_message(
            "alice", "not-the-token", cookie=run.registrar.cookies.issue(ADDR)),
            ("127.0.0.2", 4000))
        await run.settle()
        assert run.opened == []
        assert run.sent[-1] == ({"type": "ERROR", "code": "AUTH_FAILED"}, ADDR)
        user_id = run.registrar.directory.readers["alice"].id
        assert run.registrar.failed_pairs.records[("127.0.0.2", user_id)].count == 1

    _with_registrar(engine, body)


def test_a_malformed_register_counts_against_its_source(engine: Engine) -> None:
    async def body(run: _Run) -> None:
        cookie = run.registrar.cookies.issue(ADDR)
        run.register({"type": "REGISTER", "user": "alice", "ts": "soon", "nonce": "n" * 16,
                      "sig": "x", "cookie": cookie})
        assert run.sent == [({"type": "ERROR", "code": "BAD_REQUEST"}, ADDR)]
        assert run.registrar.refused_sources.records[ADDR].count == 1

    _with_registrar(engine, body)


def test_guesses_from_the_addresses_of_one_ipv6_64_are_one_sources_guesses(
        engine: Engine) -> None:
    """An attacker with a /64 guessing alice's token from a new address each time waits out
    one source's backoff; a reader in another /64 is answered as before."""
    _, token = add_user(engine, "alice", KEY)
    limit = fast_options().failed_register_limit

    async def body(run: _Run) -> None:
        for n in range(1, limit + 4):
            addr = (f"2001:db8:0:7::{n:x}", 4000)
            run.register(protocol.register_message("alice", f"guess-{n}",
                                                   cookie=run.registrar.cookies.issue(addr)),
                         addr)
        await run.settle()
        # Past the limit the guesses wait out the source's backoff, whatever their address.
        assert run.rejected.count("user_limited") >= 2
        user_id = run.registrar.directory.readers["alice"].id
        assert list(run.registrar.failed_pairs.records) == [("2001:db8:0:7::/64", user_id)]
        reader = ("2001:db8:0:8::1", 4000)
        run.register(protocol.register_message("alice", token,
                                               cookie=run.registrar.cookies.issue(reader)),
                     reader)
        await run.settle()
        assert run.opened == [("alice", reader, 0)]

    _with_registrar(engine, body)


def test_a_flood_from_one_ipv6_64_takes_one_share_of_the_register_budget(
        engine: Engine) -> None:
    add_user(engine, "alice", KEY)

    async def body(run: _Run) -> None:
        budget = run.registrar.budget.capacity
        for n in range(1, int(budget) * 2):  # twice the budget, from as many addresses
            addr = (f"2001:db8:0:7::{n:x}", 4000)
            run.register({"type": "REGISTER", "user": "alice", "ts": "soon",
                          "nonce": "n" * 16, "sig": "x",
                          "cookie": run.registrar.cookies.issue(addr)}, addr)
        # One source: never more than half the budget in the second, the rest refused.
        assert run.rejected.count("register_budget") >= budget
        reader = ("2001:db8:0:8::1", 4000)
        run.register({"type": "REGISTER", "user": "alice", "ts": "soon", "nonce": "n" * 16,
                      "sig": "x", "cookie": run.registrar.cookies.issue(reader)}, reader)
        assert run.sent[-1] == ({"type": "ERROR", "code": "BAD_REQUEST"}, reader)

    _with_registrar(engine, body)
