"""Pushes in flight (notify/retransmission.py): backoff, giving up, and sending again on PING."""

from __future__ import annotations

import asyncio

from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.retransmission import Retransmissions, plan_redelivery
from mangasync_pipeline.notify.sessions import Address, Inflight, Session

ADDR = ("127.0.0.2", 5000)


def _session(*items: Inflight, stranded: dict[int, bytes] | None = None) -> Session:
    session = Session("s" * 24, 7, "alice", ADDR, 0.0, validated=True, catching_up=False)
    session.inflight = {i.id: i for i in items}
    session.stranded = dict(stranded or {})
    return session


def test_a_ping_sends_again_what_waited_a_whole_ack_timeout_then_the_stranded_oldest_first(
) -> None:
    session = _session(Inflight(5, b"5", 2.0, 0.0, attempts=2), Inflight(3, b"3", 2.0, 1.0),
                       Inflight(4, b"4", 2.0, 9.5, attempts=1), Inflight(6, b"6", 2.0, 9.9),
                       stranded={2: b"2", 1: b"1"})
    restart, batch = plan_redelivery(session, now=10.0, ack_timeout=2.0, budget=30)
    assert batch == [3, 5, 1, 2]
    # Sent moments ago and already retried: its backoff starts over; a first send keeps its own.
    assert [item.id for item in restart] == [4]


def test_one_ping_sends_at_most_one_budget_again() -> None:
    session = _session(*(Inflight(i, b"x", 2.0, 0.0) for i in range(10, 14)),
                       stranded={1: b"1", 2: b"2"})
    assert plan_redelivery(session, 10.0, 2.0, budget=5)[1] == [10, 11, 12, 13, 1]
    assert plan_redelivery(session, 10.0, 2.0, budget=3)[1] == [10, 11, 12]


def _run(opt: ServerOptions, body) -> list[tuple[bytes, Address]]:  # type: ignore[no-untyped-def]
    sent: list[tuple[bytes, Address]] = []

    async def main() -> None:
        inflight = Retransmissions(asyncio.get_running_loop(), opt, NotifyMetrics(),
                                   lambda data, addr: sent.append((data, addr)))
        try:
            await body(inflight, sent)
        finally:
            inflight.close()

    asyncio.run(main())
    return sent


def test_an_unacknowledged_push_is_retried_with_backoff_then_stranded() -> None:
    opt = ServerOptions(ack_timeout=0.02, ack_random_factor=1.0, max_retransmit=2)
    session = _session()

    async def body(inflight: Retransmissions, sent: list[tuple[bytes, Address]]) -> None:
        pushes = inflight.new_slice()
        inflight.push(session, 9, b"nine", pushes)
        inflight.arm(pushes)
        assert sent == [(b"nine", ADDR)]
        await asyncio.sleep(0.35)  # 0.02 + 0.04 + 0.08 and the slots' slack
        assert len(sent) == 3  # the push and its two retries
        assert session.inflight == {} and session.stranded == {9: b"nine"}
        assert inflight.metrics.given_up._value.get() == 1
        assert inflight.metrics.retransmitted._value.get() == 2
        assert inflight.metrics.sent._value.get() == 1

    _run(opt, body)


def test_an_acknowledged_push_is_not_retried() -> None:
    opt = ServerOptions(ack_timeout=0.02, ack_random_factor=1.0)
    session = _session()

    async def body(inflight: Retransmissions, sent: list[tuple[bytes, Address]]) -> None:
        pushes = inflight.new_slice()
        inflight.push(session, 9, b"nine", pushes)
        inflight.arm(pushes)
        del session.inflight[9]  # what an ACK does
        await asyncio.sleep(0.1)
        assert len(sent) == 1

    _run(opt, body)


def test_a_ping_sends_the_stranded_again_and_arms_them_afresh() -> None:
    opt = ServerOptions(ack_timeout=0.05, ack_random_factor=1.0)
    session = _session(stranded={3: b"three"})

    async def body(inflight: Retransmissions, sent: list[tuple[bytes, Address]]) -> None:
        inflight.redeliver(session, asyncio.get_running_loop().time())
        assert sent == [(b"three", ADDR)]
        assert session.stranded == {} and session.inflight[3].attempts == 0
        inflight.redeliver(session, asyncio.get_running_loop().time())
        assert len(sent) == 1  # a second PING within the ACK timeout sends nothing again

    _run(opt, body)
