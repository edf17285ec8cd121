"""Pushing to sessions (notify/pushes.py) and the catch-up before it (notify/catch_up.py):
order, the send budget, one encoding per broadcast, and the collector held only while a burst
goes out."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.catch_up import add_page
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.pushes import PUMP_BATCH, Pushes
from mangasync_pipeline.notify.retransmission import Retransmissions
from mangasync_pipeline.notify.sessions import Address, Session, UserState
from mangasync_pipeline.notify.store import Notice

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _notice(nid: int, user_id: int = 1, title: str = "Burst") -> Notice:
    return Notice(id=nid, user_id=user_id, type="NEW_MANGA", manga_id=7, title=title,
                  chapter=None, message=f"New manga: {title}", created_at=CREATED)


def _session(user_id: int = 1, catching_up: bool = False) -> Session:
    return Session(f"session-of-{user_id}", user_id, f"u{user_id}", ("127.0.0.2", user_id), 0.0,
                   validated=True, catching_up=catching_up)


pytestmark = pytest.mark.usefixtures("collector_on")


Body = Callable[[Pushes, dict[int, UserState], list[tuple[bytes, Address]]], object]


def _run(opt: ServerOptions, body: Body) -> list[tuple[bytes, Address]]:
    sent: list[tuple[bytes, Address]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        users: dict[int, UserState] = {}
        inflight = Retransmissions(loop, opt, NotifyMetrics(),
                                   lambda data, addr: sent.append((data, addr)))
        pushes = Pushes(loop, opt, users, inflight, lambda session: None)
        try:
            await body(pushes, users, sent)  # type: ignore[misc]
        finally:
            pushes.close()
            inflight.close()

    asyncio.run(main())
    return sent


def _online(users: dict[int, UserState], session: Session, budget: float = 30.0) -> None:
    state = users.setdefault(session.user_id, UserState(session.user_id, budget, budget / 60,
                                                        budget, 0.0))
    state.sessions[session.id] = session


def test_a_broadcast_is_pushed_once_to_every_session_byte_for_byte() -> None:
    sessions = [_session(uid) for uid in range(1, 2 * PUMP_BATCH + 2)]
    gc_during: list[bool] = []

    async def body(pushes: Pushes, users: dict[int, UserState],
                   sent: list[tuple[bytes, Address]]) -> None:
        for s in sessions:
            _online(users, s)
        pushes.deliver([_notice(1000 + s.user_id, s.user_id) for s in sessions])
        pushes.deliver([_notice(1000 + s.user_id, s.user_id) for s in sessions])  # twice: once
        assert sent == []  # pushed from later callbacks: the trigger's answer goes first
        for _ in range(10):
            gc_during.append(gc.isenabled())
            await asyncio.sleep(0)

    sent = _run(ServerOptions(), body)
    assert len(sent) == len(sessions)
    for data, addr in sent:
        nid = 1000 + addr[1]
        assert data == protocol.encode(_notice(nid, addr[1]).to_message())
    # Held off while the burst went out (it takes three callbacks), back on after it.
    assert gc_during[:2] == [False, False] and gc.isenabled()


def test_pushes_beyond_the_users_budget_wait_for_it() -> None:
    session = _session()

    async def body(pushes: Pushes, users: dict[int, UserState],
                   sent: list[tuple[bytes, Address]]) -> None:
        _online(users, session, budget=2.0)
        users[1].rate = 20.0  # a token every 0.05 s
        pushes.deliver([_notice(n) for n in (1, 2, 3)])
        await asyncio.sleep(0.01)
        assert len(sent) == 2 and list(session.inflight) == [1, 2]
        await asyncio.sleep(0.1)
        assert len(sent) == 3

    _run(ServerOptions(), body)


def test_live_pushes_wait_behind_the_catch_up_and_come_once_after_it() -> None:
    session = _session(catching_up=True)

    async def body(pushes: Pushes, users: dict[int, UserState],
                   sent: list[tuple[bytes, Address]]) -> None:
        _online(users, session)
        pushes.deliver([_notice(5), _notice(6)])
        await asyncio.sleep(0)
        assert sent == [] and [n.id for n in session.live_pending] == [5, 6]
        add_page(session, [_notice(3), _notice(5)], page_size=10)  # 5 also came live
        pushes.schedule(session, 0.0)
        await asyncio.sleep(0)

    sent = _run(ServerOptions(), body)
    assert [protocol.decode(data)["id"] for data, _ in sent] == [3, 5, 6]  # type: ignore[index]


def test_a_full_page_leaves_the_catch_up_open_for_the_next() -> None:
    session = _session(catching_up=True)
    session.live_pending.append(_notice(9))
    assert add_page(session, [_notice(1), _notice(2)], page_size=2)
    assert session.more_after == 2 and session.catching_up
    assert [n.id for n in session.queue] == [1, 2]
    assert add_page(session, [], page_size=2)
    assert session.more_after is None and not session.catching_up
    assert [n.id for n in session.queue] == [1, 2, 9]


def test_a_reader_with_nothing_unread_needs_no_pump() -> None:
    """(A pump would hold off the process's garbage collector for nothing.)"""
    session = _session(catching_up=True)
    assert not add_page(session, [], page_size=2)
    assert not session.catching_up
    session = _session(catching_up=True)
    session.seen.add(1)  # already pushed live
    assert not add_page(session, [_notice(1)], page_size=2)


def test_a_closed_session_gets_nothing() -> None:
    session = _session()

    async def body(pushes: Pushes, users: dict[int, UserState],
                   sent: list[tuple[bytes, Address]]) -> None:
        _online(users, session)
        pushes.deliver([_notice(1)])
        session.closed = True
        await asyncio.sleep(0)

    assert _run(ServerOptions(), body) == []
