"""Benchmark of the notification server (docs/BENCHMARKS.md has the figures).

Starts `mangasync server` as a separate process on a fresh database, then from this one process:
  1. registers N simulated clients (one UDP socket each, asyncio, spread over 16 loopback
     addresses; each answers RETRY with its cookie and PINGs right after REGISTERED, as
     protocol 3 asks), measuring REGISTERs per second and server RSS per session;
  2. hands the clients' sockets to `notify_receiver.py`, a process of its own reading them in
     an epoll loop (asyncio's one datagram per callback made the bench the bottleneck), posts
     one NEW_MANGA and times first to last client having it (kernel receive timestamps); the
     clients ACK in one burst after the round, well before the server's first retransmission;
     then until the database shows all N read;
  3. the floor, right after each broadcast: another Python process sends N datagrams of the
     same size to the same sockets; its sendto loop time (the raw send floor) and first to
     last receipt, timed by the same receiver;
  4. measures sustained trigger requests per second (NEW_CHAPTER to a 10-reader library).

REGISTER under floods, from an attacker's side: bench_register_floods.py.

    .venv/bin/python bench/bench_notify.py [--clients 10000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import socket
import statistics
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
from mangasync_pipeline.ops.system import free_port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client(asyncio.DatagramProtocol):
    """One simulated reader during registration; afterwards its socket is read by
    `notify_receiver.py` (see `Receivers`)."""

    def __init__(self, user: str, token: str, server: tuple[str, int]) -> None:
        self.user, self.token, self.server = user, token, server
        self.transport: asyncio.DatagramTransport | None = None
        self.session: str | None = None
        self.registered = asyncio.get_running_loop().create_future()
        self.asked = False
        self.cookie: str | None = None
        # Signed before the clock starts: the harness's own cost is not the server's.
        self.first_register = protocol.encode(protocol.register_message(user, token))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def register(self) -> None:
        assert self.transport is not None
        data = self.first_register
        if self.asked:  # a retry needs a nonce of its own: the server refuses replays
            data = protocol.encode(protocol.register_message(self.user, self.token,
                                                             cookie=self.cookie))
        self.asked = True
        self.transport.sendto(data, self.server)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = protocol.decode(data)
        if msg is None:
            return
        if msg["type"] == "RETRY" and not self.registered.done():
            self.cookie = str(msg["cookie"])  # protocol 3: the address proved it receives
            self.register()
            return
        if msg["type"] == "REGISTERED" and self.transport is not None:
            self.session = msg["session"]
            # Protocol 2: prove this address receives, so the server may push to it.
            self.transport.sendto(protocol.encode({"type": "PING", "session": self.session}),
                                  self.server)
            if not self.registered.done():
                self.registered.set_result(None)


# The floor's sender: a separate process, as the server is.
_SENDER = """
import socket, sys, time
addrs = [(h, int(p)) for h, p in (line.split() for line in open(sys.argv[1]))]
data = bytes.fromhex(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sys.stdin.readline()
start = time.perf_counter()
for addr in addrs:
    sock.sendto(data, addr)
print(time.perf_counter() - start, flush=True)
"""


async def register_all(clients: list[Client], window: int) -> float:
    """REGISTER every client, `window` in flight at any time (a sliding window, so the
    figure is the server's sustained rate); returns seconds."""
    queue = iter(clients)
    start = time.perf_counter()

    def next_one(_: object = None) -> None:
        client = next(queue, None)
        if client is not None:
            client.registered.add_done_callback(next_one)
            client.register()

    for _ in range(window):
        next_one()
    # A REGISTER refused by the server's budget (5,000 checked a second, all sources
    # together) or lost to a full buffer is asked again after 3 s, as `mangasync listen`
    # does: waiting longer would measure the bench's patience, not the server.
    for _ in range(10):
        pending = [c.registered for c in clients if not c.registered.done()]
        if not pending:
            break
        await asyncio.wait(pending, timeout=3)
        for c in clients:
            if c.asked and not c.registered.done():
                c.register()
        await asyncio.sleep(0)
    return time.perf_counter() - start


class Receivers:
    """The clients' sockets after registration, read by `notify_receiver.py` in its own
    process (an epoll loop), so that the broadcast and the floor are timed by a receiving
    side faster than either."""

    def __init__(self, proc: asyncio.subprocess.Process, setup_file: str, spin: bool) -> None:
        self.proc, self.setup_file, self.spin = proc, setup_file, spin

    @classmethod
    async def start(cls, clients: list[Client], server: tuple[str, int], spin: bool
                    ) -> Receivers:
        fds, rows = [], []
        for c in clients:
            assert c.transport is not None and c.session is not None
            c.transport.pause_reading()  # from now on only the receiver reads these sockets
            fd = c.transport.get_extra_info("socket").fileno()
            fds.append(fd)
            rows.append([fd, c.session])
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"server": list(server), "clients": rows}, f)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, os.path.join(os.path.dirname(__file__), "notify_receiver.py"),
            f.name, pass_fds=fds, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=1 << 20)
        return cls(proc, f.name, spin)

    async def _ask(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()

    async def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return dict(json.loads(await self.proc.stdout.readline()))

    async def arm(self, kind: str, ack: bool) -> dict[str, Any]:
        """Start a round; returns once the receiver is polling."""
        await self._ask({"kind": kind, "timeout": 30, "ack": ack, "spin": self.spin})
        return await self.answer()

    async def stop(self) -> None:
        await self._ask({"quit": True})
        await self.proc.wait()
        os.unlink(self.setup_file)


async def floor_round(receivers: Receivers, clients: list[Client], sample: bytes
                      ) -> dict[str, Any]:
    """The same number of datagrams of the same size, sent by another Python process to the
    same client sockets: the raw sendto loop, and first to last receipt."""
    addrs = [c.transport.get_extra_info("sockname") for c in clients if c.transport]
    with tempfile.NamedTemporaryFile("w", suffix=".addrs", delete=False) as f:
        f.writelines(f"{h} {p}\n" for h, p in addrs)
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SENDER, f.name, sample.hex(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    await asyncio.sleep(0.5)  # let the interpreter start before the clock matters
    await receivers.arm("FLOOR", ack=False)
    assert sender.stdin is not None and sender.stdout is not None
    sender.stdin.write(b"go\n")
    await sender.stdin.drain()
    raw_s = float((await sender.stdout.readline()).decode())
    got = await receivers.answer()
    await sender.wait()
    os.unlink(f.name)
    return {"raw_sendto_s": raw_s, "floor_received": got["received"],
            "floor_first_to_last_s": got["kernel"]["first_to_last_s"],
            "floor_read_first_to_last_s": got["read"]["first_to_last_s"]}


def retransmitted(http: str) -> float:
    """The server's count of retransmitted pushes (from /metrics)."""
    for line in httpx.get(f"{http}/metrics").text.splitlines():
        if line.startswith("mangasync_notifications_retransmitted_total"):
            return float(line.split()[-1])
    return 0.0


async def broadcast_round(receivers: Receivers, http: str, manga_id: int, engine: Any,
                          clients: list[int]) -> dict[str, Any]:
    retransmitted_before = retransmitted(http)
    stale = (await receivers.arm("NEW_MANGA", ack=True))["stale"]
    async with httpx.AsyncClient() as http_client:
        start = time.perf_counter()
        r = await http_client.post(f"{http}/notify/new-manga",
                                   json={"manga_id": manga_id, "title": "Benchmark Manga"})
        trigger_s = time.perf_counter() - start
        response = r.json()
    got = await receivers.answer()
    n = t.notifications
    while True:
        with engine.connect() as conn:
            unread = conn.execute(select(func.count()).select_from(n).where(
                n.c.read.is_(False), n.c.manga_id == manga_id, n.c.user_id.in_(clients))
            ).scalar_one()
        if unread == 0 or time.perf_counter() - start > 120:
            break
        await asyncio.sleep(0.02)
    read_s = time.perf_counter() - start
    kernel, read, ack = got["kernel"], got["read"], got["ack"]
    return {
        "trigger_response": {k: response[k] for k in ("recipients", "online")},
        "trigger_http_s": trigger_s, "received": got["received"],
        "duplicates": got["duplicates"], "stale_before_round": stale,
        "all_received_s": read["last"] - start if read["first_to_last_s"] is not None else None,
        "acks_sent_s": ack["started_at"] + ack["send_s"] - start, "acks_dropped": ack["dropped"],
        # The burst of ACKs went out this long after the first client had the push; under
        # the server's first retransmission timeout (2 s), nothing was sent twice.
        "first_push_to_acks_sent_s": ack["started_at"] + ack["send_s"] - read["first"],
        "all_read_in_db_s": read_s,
        "retransmitted": retransmitted(http) - retransmitted_before,
        "push_first_to_last_s": kernel["first_to_last_s"],
        "push_read_first_to_last_s": read["first_to_last_s"],
        "push_percentiles_s": {k: kernel[k] for k in ("p50_s", "p90_s", "p99_s")},
    }


async def run_clients(args: argparse.Namespace, users: list[tuple[int, str, str]],
                      udp: tuple[str, int], http: str, server_pid: int,
                      engine: Any, manga_ids: list[int]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    for i, (_, name, token) in enumerate(users):
        _, proto = await loop.create_datagram_endpoint(
            # Not connected: the floor's sender, another socket, must reach them too. Readers
            # come from many addresses: the REGISTER budget is shared fairly by address.
            lambda n=name, tk=token: Client(n, tk, udp),
            local_addr=(f"127.0.1.{1 + i % args.sources}", 0))
        clients.append(proto)
    rss_before = rss_kib(server_pid)
    cpu_before = cpu_seconds(server_pid)
    register_s = await register_all(clients, window=args.window)
    register_cpu = cpu_seconds(server_pid) - cpu_before
    registered = sum(1 for c in clients if c.registered.done())
    # What the server refused while they registered (budget, RETRY, ...), from /metrics.
    refused = {line.split('"')[1]: float(line.split()[-1]) for line in httpx.get(
        f"{http}/metrics").text.splitlines()
        if line.startswith("mangasync_udp_datagrams_rejected_total{")}
    await asyncio.sleep(0.5)
    rss_after = rss_kib(server_pid)

    sample = protocol.encode({"type": "FLOOR", "id": 123456, "manga_id": manga_ids[0],
                              "title": "Benchmark Manga", "message": "New manga: Benchmark Manga",
                              "created_at": "2026-01-01T00:00:00Z"})
    online = [c for c in clients if c.registered.done()]
    receivers = await Receivers.start(online, udp, not args.receiver_sleeps)
    # Alternate broadcasts and floors, so both see the same machine load; medians reported.
    rounds = []
    for manga_id in manga_ids:
        push = await broadcast_round(receivers, http, manga_id, engine,
                                     [u for u, _, _ in users])
        await asyncio.sleep(0.2)
        push.update(await floor_round(receivers, online, sample))
        push.update(push_over_floor=push["push_first_to_last_s"]
                    / max(1e-9, push["floor_first_to_last_s"]),
                    push_over_sendto=push["push_first_to_last_s"] / push["raw_sendto_s"],
                    push_read_over_sendto=push["push_read_first_to_last_s"]
                    / push["raw_sendto_s"])
        print(json.dumps(push), file=sys.stderr, flush=True)
        rounds.append(push)
    await receivers.stop()
    for c in clients:
        if c.transport:
            c.transport.close()

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    return {
        "clients": len(clients), "registered": registered, "register_s": register_s,
        "refused_while_registering": refused,
        "registers_per_s": registered / register_s,
        "server_cpu_ms_per_register": 1000 * register_cpu / max(1, registered),
        "server_rss_kib_before": rss_before, "server_rss_kib_after": rss_after,
        "bytes_per_session": (rss_after - rss_before) * 1024 / max(1, registered),
        "rounds": len(rounds), "datagram_bytes": len(sample),
        **{f"median_{k}": median(k) for k in (
            "trigger_http_s", "all_received_s", "acks_sent_s", "all_read_in_db_s",
            "push_first_to_last_s", "push_read_first_to_last_s", "floor_first_to_last_s",
            "floor_read_first_to_last_s", "raw_sendto_s", "push_over_floor",
            "push_over_sendto", "push_read_over_sendto")},
        "worst_push_over_sendto": max(r["push_over_sendto"] for r in rounds),
        "retransmitted": sum(r["retransmitted"] for r in rounds),
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
    parser.add_argument("--rounds", type=int, default=3, help="broadcasts, each with a floor")
    parser.add_argument("--window", type=int, default=1000, help="REGISTERs in flight")
    parser.add_argument("--receiver-sleeps", action="store_true",
                        help="the receiver sleeps in epoll between datagrams of a round "
                             "(default: it polls without sleeping once the round has begun)")
    parser.add_argument("--sources", type=int, default=16,
                        help="loopback addresses the clients register from")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.clients + 1000), hard))
    tmp = tempfile.mkdtemp(prefix="bench-notify-")
    # One master key for this run, for the users created here and the server alike.
    os.environ.setdefault("MANGASYNC_SECRET_KEY", secrets.token_urlsafe(32))
    url = args.database_url or f"sqlite:///{tmp}/bench.sqlite"
    upgrade(url)
    engine = make_engine(url)
    manga_ids = [add_manga(engine, "Benchmark Manga") for _ in range(args.rounds)]
    manga_id = manga_ids[0]
    users = add_users(engine, args.clients, prefix="bench")
    follow(engine, [u for u, _, _ in users[:10]], manga_id)
    http_port, udp_port = free_port(), free_port(kind=socket.SOCK_DGRAM)
    env = {**os.environ, "DATABASE_URL": url, "MANGASYNC_HTTP_PORT": str(http_port),
           "MANGASYNC_UDP_PORT": str(udp_port)}
    log = open(f"{tmp}/server.log", "w")  # noqa: SIM115 - lives as long as the server
    profile = os.environ.get("BENCH_PROFILE")  # a file: run the server under cProfile
    wrap = ["-m", "cProfile", "-o", profile] if profile else []
    server = subprocess.Popen([sys.executable, *wrap, "-m", "mangasync_pipeline.cli", "server",
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
                                         server.pid, engine, manga_ids))
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
