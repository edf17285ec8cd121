"""Benchmark of the notification server (docs/BENCHMARKS.md has the figures).

Starts `mangasync server` as a separate process on a fresh database, then from this one process:
  1. registers N simulated clients (one UDP socket each, asyncio), measuring server RSS per session;
  2. posts one NEW_MANGA and times until every client has received and ACKed it, and until the
     database shows all N read;
  3. times the raw floor: sending N datagrams of the same size from Python over loopback;
  4. measures sustained trigger requests per second (NEW_CHAPTER to a 10-reader library).

    .venv/bin/python bench/bench_notify.py [--clients 10000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
from sqlalchemy import func, select

from mangasync_pipeline.db import tables as t
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import upgrade
from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.testing import add_manga, add_users, follow


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client(asyncio.DatagramProtocol):
    def __init__(self, bench: Bench, user: str, token: str) -> None:
        self.bench, self.user, self.token = bench, user, token
        self.transport: asyncio.DatagramTransport | None = None
        self.session: str | None = None
        self.registered = asyncio.get_running_loop().create_future()
        self.got: set[int] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def register(self) -> None:
        assert self.transport is not None
        self.transport.sendto(protocol.encode(protocol.register_message(self.user, self.token)))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = protocol.decode(data)
        if msg is None:
            return
        if msg["type"] == "REGISTERED":
            self.session = msg["session"]
            if not self.registered.done():
                self.registered.set_result(None)
        elif msg["type"] == "NEW_MANGA" and self.transport is not None:
            self.transport.sendto(protocol.encode(
                {"type": "ACK", "session": self.session, "ids": [msg["id"]]}))
            if msg["id"] not in self.got:
                self.got.add(msg["id"])
                self.bench.acked += 1
                if self.bench.acked == self.bench.n:
                    self.bench.all_acked.set()


class Bench:
    def __init__(self, n: int) -> None:
        self.n = n
        self.acked = 0
        self.all_acked = asyncio.Event()


async def run_clients(args: argparse.Namespace, users: list[tuple[int, str, str]],
                      udp: tuple[str, int], http: str, server_pid: int,
                      engine: Any, manga_id: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    bench = Bench(len(users))
    clients: list[Client] = []
    for _, name, token in users:
        _, proto = await loop.create_datagram_endpoint(
            lambda n=name, tk=token: Client(bench, n, tk), remote_addr=udp)
        clients.append(proto)
    rss_before = rss_kib(server_pid)
    start = time.perf_counter()
    window = 500  # REGISTERs in flight, so the server's socket buffer is not flooded
    for i in range(0, len(clients), window):
        batch = clients[i:i + window]
        for c in batch:
            c.register()
        done, pending = await asyncio.wait([c.registered for c in batch], timeout=10)
        for c in batch:  # lost to a full buffer: ask again
            if not c.registered.done():
                c.register()
        if pending:
            await asyncio.wait(pending, timeout=10)
    register_s = time.perf_counter() - start
    registered = sum(1 for c in clients if c.registered.done())
    await asyncio.sleep(0.5)
    rss_after = rss_kib(server_pid)

    async with httpx.AsyncClient() as http_client:
        start = time.perf_counter()
        r = await http_client.post(f"{http}/notify/new-manga",
                                   json={"manga_id": manga_id, "title": "Benchmark Manga"})
        trigger_s = time.perf_counter() - start
        response = r.json()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bench.all_acked.wait(), 120)
        delivered_s = time.perf_counter() - start
    n = t.notifications
    while True:
        with engine.connect() as conn:
            unread = conn.execute(select(func.count()).select_from(n)
                                  .where(n.c.read.is_(False))).scalar_one()
        if unread == 0 or time.perf_counter() - start > 120:
            break
        await asyncio.sleep(0.02)
    all_read_s = time.perf_counter() - start

    # The floor: the same number of datagrams of the same size, from Python, over loopback.
    sample = protocol.encode({"type": "NEW_MANGA", "id": 123456, "manga_id": manga_id,
                              "title": "Benchmark Manga", "message": "New manga: Benchmark Manga",
                              "created_at": "2026-01-01T00:00:00Z"})
    addrs = [c.transport.get_extra_info("sockname") for c in clients if c.transport]
    for c in clients:
        c.got.clear()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.perf_counter()
    for addr in addrs:
        sender.sendto(sample, addr)
    raw_s = time.perf_counter() - start
    sender.close()
    for c in clients:
        if c.transport:
            c.transport.close()
    return {
        "clients": len(clients), "registered": registered, "register_s": register_s,
        "server_rss_kib_before": rss_before, "server_rss_kib_after": rss_after,
        "bytes_per_session": (rss_after - rss_before) * 1024 / max(1, registered),
        "trigger_response": {k: response[k] for k in ("recipients", "online")},
        "trigger_http_s": trigger_s, "all_received_and_acked_s": delivered_s,
        "acked_clients": bench.acked, "all_read_in_db_s": all_read_s,
        "raw_sendto_s": raw_s, "datagram_bytes": len(sample),
    }


async def trigger_rate(http: str, manga_id: int, seconds: float, concurrency: int) -> float:
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, wid: int) -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            r = await client.post(f"{http}/notify/new-chapter", json={
                "manga_id": manga_id, "title": "Rate", "chapter": wid * 1_000_000 + i})
            assert r.status_code == 202, r.text
            count += 1

    start = time.perf_counter()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client, w) for w in range(concurrency)))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.clients + 1000), hard))
    tmp = tempfile.mkdtemp(prefix="bench-notify-")
    url = args.database_url or f"sqlite:///{tmp}/bench.sqlite"
    upgrade(url)
    engine = make_engine(url)
    manga_id = add_manga(engine, "Benchmark Manga")
    users = add_users(engine, args.clients, prefix="bench")
    follow(engine, [u for u, _, _ in users[:10]], manga_id)
    http_port, udp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    env = {**os.environ, "DATABASE_URL": url, "MANGASYNC_HTTP_PORT": str(http_port),
           "MANGASYNC_UDP_PORT": str(udp_port)}
    log = open(f"{tmp}/server.log", "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen([sys.executable, "-m", "mangasync_pipeline.cli", "server",
                               "--heartbeat", "600"], env=env, stderr=log)
    print(f"server log: {log.name}", file=sys.stderr)
    http = f"http://127.0.0.1:{http_port}"
    result: dict[str, Any] = {}
    try:
        for _ in range(200):
            try:
                httpx.get(f"{http}/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        result = asyncio.run(run_clients(args, users, ("127.0.0.1", udp_port), http,
                                         server.pid, engine, manga_id))
        result["database"] = engine.dialect.name
        print(json.dumps(result, indent=2), file=sys.stderr, flush=True)
        result["triggers_per_s_sequential"] = asyncio.run(
            trigger_rate(http, manga_id, args.rate_seconds, 1))
        result["triggers_per_s_8_concurrent"] = asyncio.run(
            trigger_rate(http, manga_id, args.rate_seconds, 8))
    finally:
        server.send_signal(signal.SIGTERM)
        start = time.perf_counter()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
        result["server_stop_s"] = time.perf_counter() - start
        engine.dispose()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
