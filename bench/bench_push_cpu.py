"""CPU time of a broadcast's pushes inside one process, beside a bare sendto loop.

`bench_notify.py` times a broadcast end to end: wall time, three processes, the machine's load
in every figure. This one puts N validated sessions straight into a `UdpEndpoint` (each with
a real loopback socket as its address), hands it one notification per user as a trigger
would, and measures the process CPU time until all are sent, beside a plain loop of N
`sendto` calls of the same datagram to the same sockets. Process CPU time is what a busy
machine disturbs least. docs/BENCHMARKS.md section 4.1 has the figures.

    .venv/bin/python bench/bench_push_cpu.py [--sessions 10000] [--rounds 11]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import upgrade
from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.sessions import Session, UserState
from mangasync_pipeline.notify.store import Notice, NotifyStore
from mangasync_pipeline.notify.udp import UdpEndpoint


def drain(socks: list[socket.socket]) -> None:
    for s in socks:
        while True:
            try:
                s.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break


async def measure(n: int, rounds: int, url: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    opts = ServerOptions(secret_key=b"k" * 32)

    async def run_db(fn: Any, *args: Any) -> Any:
        return fn(*args)

    _, ep = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(NotifyStore(make_engine(url)), opts, NotifyMetrics(), run_db),
        local_addr=("127.0.0.1", 0))
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    addrs = [s.getsockname() for s in socks]
    now = time.monotonic()
    for i, addr in enumerate(addrs):  # registered, validated, caught up: ready for live pushes
        session = Session(f"s{i}", i + 1, f"u{i}", addr, now, validated=True,
                          catching_up=False)
        state = UserState(i + 1, opts.send_budget, opts.send_budget / opts.budget_window,
                          opts.send_budget, now)
        state.sessions[session.id] = session
        ep.sessions[session.id] = session
        ep.users[i + 1] = state
    raw_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    created = datetime.now(UTC)
    push_s, raw_s = [], []
    for r in range(rounds):
        notices = [Notice(id=1_000_000 * (r + 1) + i, user_id=i + 1, type="NEW_MANGA",
                          manga_id=7, title="Benchmark Manga", chapter=None,
                          message="New manga: Benchmark Manga", created_at=created)
                   for i in range(n)]
        data = protocol.encode(notices[0].to_message())  # what the pushes carry
        drain(socks)
        start = time.process_time()
        for addr in addrs:
            raw_sock.sendto(data, addr)
        raw_s.append(time.process_time() - start)
        drain(socks)
        ep.deliver(notices)  # the trigger's part: queues, sends nothing yet
        start = time.process_time()
        while ep.metrics.registry.get_sample_value(
                "mangasync_notifications_sent_total") < n * (r + 1):
            await asyncio.sleep(0)
        push_s.append(time.process_time() - start)
        for session in ep.sessions.values():  # as if all had ACKed
            session.cancel_timers()
    await ep.close()
    ratios = [p / r for p, r in zip(push_s, raw_s, strict=True)]
    return {"sessions": n, "rounds": rounds,
            "push_cpu_s": {"min": min(push_s), "median": statistics.median(push_s)},
            "sendto_loop_cpu_s": {"min": min(raw_s), "median": statistics.median(raw_s)},
            "push_us_each_median": 1e6 * statistics.median(push_s) / n,
            "ratio": {"min": min(ratios), "median": statistics.median(ratios)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.sessions + 1000), hard))
    url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-push-')}/push.sqlite"
    upgrade(url)  # the endpoint's user directory reads the (empty) users table
    print(asyncio.run(measure(args.sessions, args.rounds, url)))


if __name__ == "__main__":
    main()
