"""REGISTER throughput and a legitimate reader's REGISTER latency under each reported flood
(docs/BENCHMARKS.md, section 4.2).

Starts `mangasync server` in its own process on a throwaway database, then, for each flood:
a flooding process of its own sends as fast as it can (loopback only) from 127.0.0.2 and up;
after a second, 1,000 legitimate readers register from eight other addresses (200 REGISTERs
in flight, each answering RETRY with its cookie as protocol 3 asks: REGISTERs per second and
each reader's time from first datagram to REGISTERED), while a probe reads `/health`. Floods:

- none: the baseline;
- spoofed: REGISTERs whose source address the sender cannot receive at (no valid cookie),
  naming a reader and unknown users;
- guesses: wrong signatures naming one reader, from a real address with its cookie;
- valid_account: one account's own valid REGISTERs, each with a fresh nonce, from 64 ports;
- huge_ts: REGISTERs whose `ts` has 401 digits, with a cookie;
- slow_http: 3,000 HTTP connections that never finish their headers.

    .venv/bin/python bench/bench_register_floods.py [--backend sqlite|postgresql]
        [--seconds 8] [--server-code DIR]

`--server-code DIR` runs the server from another checkout of the code (the figures before a
change); the harness's clients answer RETRY when there is one and work with either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import command, stop, throwaway_db

from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.testing import add_users
from mangasync_pipeline.ops.system import free_port

LEGIT_SOURCES = [f"127.0.0.{i}" for i in range(10, 18)]

# The flooding process: its own interpreter, so its sends do not share our GIL.
_FLOOD = r'''
import json, socket, sys, time
from mangasync_pipeline.notify import protocol
kind, port = sys.argv[1], int(sys.argv[2])
extra = json.loads(sys.argv[4])
server = ("127.0.0.1", port)
sent = 0
deadline = time.monotonic() + float(extra["seconds"])

def cookies_of(socks):
    """Each socket's cookie, asked all at once; None for all from a server without cookies
    (asked of the first socket only: to such a server the question is a failed REGISTER)."""
    for s in socks:
        s.send(protocol.encode(protocol.register_message("cookie-please", "-")))
        if s is socks[0]:
            time.sleep(0.5)
            try:
                msg = protocol.decode(s.recv(2000))
            except BlockingIOError:
                msg = None
            if not msg or msg["type"] != "RETRY":
                return [None] * len(socks)
            s.send(protocol.encode(protocol.register_message("cookie-please", "-")))
    time.sleep(0.5)
    found = []
    for s in socks:
        cookie = None
        try:
            while cookie is None:
                msg = protocol.decode(s.recv(2000))
                if msg and msg["type"] == "RETRY":
                    cookie = msg["cookie"]
        except (BlockingIOError, OSError):
            pass
        found.append(cookie)
    return found

if kind == "slow_http":
    held = []
    for _ in range(3000):
        s = socket.socket(); s.settimeout(1.0)
        try:
            s.bind(("127.0.0.7", 0)); s.connect(("127.0.0.1", extra["http_port"]))
            s.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        except OSError:
            pass
        held.append(s); sent += 1
    print(json.dumps({"sent": sent}), flush=True)
    time.sleep(max(0.0, deadline - time.monotonic()))
    raise SystemExit
source = {"spoofed": "127.0.0.2", "guesses": "127.0.0.4", "valid_account": "127.0.0.5",
          "huge_ts": "127.0.0.6"}[kind]
socks = []
for _ in range(64 if kind == "valid_account" else 16):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0)); s.connect(server); s.setblocking(False)
    socks.append(s)
cookies = ["a" + "A" * 20] * len(socks) if kind == "spoofed" else cookies_of(socks)
prepared = [protocol.encode(protocol.register_message(
    extra["victim"] if i % 2 else f"nobody{i}", "guess")) for i in range(256)]
i = 0
while time.monotonic() < deadline:
    for s, cookie in zip(socks, cookies):
        if kind == "valid_account":
            msg = protocol.register_message(extra["hog"], extra["hog_token"], cookie=cookie)
        elif kind == "huge_ts":
            msg = {**protocol.register_message(extra["victim"], "x", cookie=cookie),
                   "ts": 10 ** 400}
        else:
            msg = {**json.loads(prepared[i % 256]), "cookie": cookie}
        try:
            s.send(protocol.encode(msg))
        except (BlockingIOError, ConnectionRefusedError):
            pass
        sent += 1; i += 1
    if i % 4096 < len(socks):
        for s in socks:  # what comes back is not read by a flooder: drop it
            try:
                while True:
                    s.recv(2000)
            except (BlockingIOError, ConnectionRefusedError):
                pass
print(json.dumps({"sent": sent}), flush=True)
'''


class Reader(asyncio.DatagramProtocol):
    """A legitimate reader: REGISTER, answer RETRY with the cookie, PING on REGISTERED."""

    def __init__(self, user: str, token: str, server: tuple[str, int]) -> None:
        self.user, self.token, self.server = user, token, server
        self.transport: asyncio.DatagramTransport | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.cookie: str | None = None
        self.started = 0.0
        self.latency: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def register(self) -> None:
        assert self.transport is not None
        if not self.started:
            self.started = time.perf_counter()
        self.transport.sendto(protocol.encode(protocol.register_message(
            self.user, self.token, cookie=self.cookie)), self.server)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = protocol.decode(data)
        if msg is None or self.done.done():
            return
        if msg["type"] == "RETRY":
            self.cookie = str(msg["cookie"])
            self.register()
        elif msg["type"] == "REGISTERED" and self.transport is not None:
            self.latency = time.perf_counter() - self.started
            self.transport.sendto(protocol.encode({"type": "PING", "session": msg["session"]}),
                                  self.server)
            self.done.set_result(None)


async def register_readers(users: list[tuple[int, str, str]], udp: tuple[str, int],
                           window: int, patience: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    readers: list[Reader] = []
    for i, (_, name, token) in enumerate(users):
        _, reader = await loop.create_datagram_endpoint(
            lambda n=name, tk=token: Reader(n, tk, udp),
            local_addr=(LEGIT_SOURCES[i % len(LEGIT_SOURCES)], 0))
        readers.append(reader)
    queue = iter(readers)
    start = time.perf_counter()

    def next_one(_: object = None) -> None:
        reader = next(queue, None)
        if reader is not None:
            reader.done.add_done_callback(next_one)
            reader.register()

    for _ in range(window):
        next_one()
    deadline = start + patience
    while (pending := [r.done for r in readers if r.started and not r.done.done()]) \
            and time.perf_counter() < deadline:
        await asyncio.wait(pending, timeout=1.0)
        for r in readers:  # a lost or refused REGISTER is asked again after 1 s
            if r.started and not r.done.done() and time.perf_counter() - r.started > 1.0:
                r.register()
    elapsed = time.perf_counter() - start
    latencies = sorted(r.latency for r in readers if r.latency is not None)
    for r in readers:
        if r.transport is not None:
            r.transport.close()

    def pct(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 4) \
            if latencies else None

    return {"readers": len(readers), "registered": len(latencies),
            "registers_per_s": round(len(latencies) / elapsed, 1),
            "latency_p50_s": pct(0.5), "latency_p99_s": pct(0.99),
            "latency_max_s": round(latencies[-1], 4) if latencies else None}


def health_latencies(http: str, seconds: float) -> dict[str, Any]:
    times, failures = [], 0
    deadline = time.monotonic() + seconds
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"),
                      timeout=2.0) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                client.get(f"{http}/health").raise_for_status()
                times.append(time.perf_counter() - start)
            except httpx.HTTPError:
                failures += 1
            time.sleep(0.2)
    return {"probes": len(times) + failures, "failed": failures,
            "max_s": round(max(times), 4) if times else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--seconds", type=float, default=8.0, help="each flood's length")
    parser.add_argument("--readers", type=int, default=1000)
    parser.add_argument("--server-code", default=None,
                        help="run the server from this checkout (figures before a change)")
    parser.add_argument("--floods", default="none,spoofed,guesses,valid_account,huge_ts,"
                                            "slow_http")
    args = parser.parse_args()
    os.environ.setdefault("MANGASYNC_SECRET_KEY", secrets.token_urlsafe(32))
    code = str(Path(args.server_code).resolve()) if args.server_code else str(
        Path(__file__).resolve().parent.parent)
    results: dict[str, Any] = {"command": command()}
    with tempfile.TemporaryDirectory(prefix="bench-floods-") as tmp, \
            throwaway_db(args.backend, Path(tmp)) as url:
        engine = make_engine(url)
        readers = add_users(engine, args.readers, prefix="reader")
        (_, victim, _), (_, hog, hog_token) = add_users(engine, 2, prefix="target")
        engine.dispose()
        http_port, udp_port = free_port(), free_port(kind=socket.SOCK_DGRAM)
        env = {**os.environ, "DATABASE_URL": url, "MANGASYNC_HTTP_PORT": str(http_port),
               "MANGASYNC_UDP_PORT": str(udp_port), "PYTHONPATH": code}
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as log:
            server = subprocess.Popen([sys.executable, "-m", "mangasync_pipeline.cli",
                                       "server", "--heartbeat", "600"], env=env, stderr=log,
                                      cwd=code)
        http = f"http://127.0.0.1:{http_port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{http}/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            for kind in args.floods.split(","):
                flooder = None
                log_before = log_path.stat().st_size
                if kind != "none":
                    extra = {"seconds": args.seconds, "victim": victim, "hog": hog,
                             "hog_token": hog_token, "http_port": http_port}
                    flooder = subprocess.Popen(
                        [sys.executable, "-c", _FLOOD, kind, str(udp_port), code,
                         json.dumps(extra)], stdout=subprocess.PIPE, text=True)
                    time.sleep(1.5)
                row = asyncio.run(register_readers(readers, ("127.0.0.1", udp_port), 200,
                                                   max(3.0, args.seconds - 2.5)))
                row["health"] = health_latencies(http, 1.0)
                if flooder is not None:
                    out, _ = flooder.communicate(timeout=args.seconds + 60)
                    sent = json.loads(out.strip().splitlines()[-1])["sent"]
                    row["flood_sent"] = sent
                    row["flood_per_s"] = round(sent / args.seconds)
                row["server_log_bytes"] = log_path.stat().st_size - log_before
                try:
                    row["sessions_open"] = httpx.get(f"{http}/health", timeout=10).json()[
                        "udp"]["sessions"]
                except httpx.HTTPError as exc:  # the server is still busy with the flood
                    row["sessions_open"] = f"/health unanswered: {type(exc).__name__}"
                results[kind] = row
                print(kind, json.dumps(row), file=sys.stderr, flush=True)
                time.sleep(1.0)
        finally:
            stop(server)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
