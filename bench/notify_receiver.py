"""The benchmark's receiving side for broadcast rounds: one process, one tight epoll loop.

`bench_notify.py` registers its 10,000 clients with asyncio (that phase measures REGISTERs),
then hands their sockets to this process (inherited file descriptors). An asyncio datagram
protocol handles one datagram per callback, about 10 us each here, so 10,000 sockets took in
a broadcast no faster than 0.12 s whoever sent it: the measuring side, not the server, was the
limit. Here each ready socket costs one `recvmsg` in a plain loop, in a process of its own so
the trigger and the floor's sender do not share its CPU.

Each datagram is timed twice: when the kernel queued it on the client's socket
(`SO_TIMESTAMPNS`, CLOCK_REALTIME) and when this loop read it (`time.perf_counter`).
ACKs are not sent during a round; they go in one burst after the last client has the
datagram (the server's first retransmission comes after 2 to 3 s, PROTOCOL.md).

Commands, one JSON object a line on stdin; one JSON answer a line on stdout:
    {"kind": "NEW_MANGA", "timeout": 30, "ack": true, "spin": true}
        -> {"ready": true, "stale": <datagrams drained first>}, then the round's figures
    {"quit": true}
argv[1]: a JSON file {"server": [host, port], "clients": [[fd, session], ...]}.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time
from typing import Any

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; not exported by Python 3.11
_TIMESPEC = struct.Struct("qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return sec + nsec / 1e9
    return 0.0


def _spread(times: list[float]) -> dict[str, Any]:
    if not times:
        return {"first_to_last_s": None}
    times = sorted(times)
    return {"first_to_last_s": times[-1] - times[0], "first": times[0], "last": times[-1],
            **{f"p{int(q * 100)}_s": times[int(q * (len(times) - 1))] - times[0]
               for q in (0.5, 0.9, 0.99)}}


class Receiver:
    def __init__(self, setup: dict[str, Any]) -> None:
        self.server = tuple(setup["server"])
        self.socks: dict[int, socket.socket] = {}
        self.sessions: dict[int, str] = {}
        self.epoll = select.epoll()
        for fd, session in setup["clients"]:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.socks[fd] = sock
            self.sessions[fd] = session
            self.epoll.register(fd, select.EPOLLIN)

    def drain(self) -> int:
        """Datagrams left over from before the round (late retransmissions, PONGs)."""
        stale = 0
        for sock in self.socks.values():
            while True:
                try:
                    sock.recv(2048)
                except (BlockingIOError, InterruptedError):
                    break
                stale += 1
        return stale

    def round(self, kind: str, timeout: float, ack: bool, spin: bool
              ) -> dict[str, Any]:
        stale = self.drain()
        print(json.dumps({"ready": True, "stale": stale}), flush=True)
        marker = b'"type":"' + kind.encode() + b'"'
        socks, n = self.socks, len(self.socks)
        got: dict[int, tuple[float, float, bytes]] = {}
        others = duplicates = 0
        poll, recvmsg, now = self.epoll.poll, socket.socket.recvmsg, time.perf_counter
        deadline = now() + timeout
        while len(got) < n:
            left = deadline - now()
            if left <= 0:
                break
            # Once the round has begun, poll without sleeping: a sleeping receiver makes each
            # sendto to it pay for waking it up (4 to 5 us here, as much as the send itself),
            # which a server pushing to other machines does not pay.
            for fd, _ in poll(0 if spin and got else min(left, 1.0), n):
                try:
                    data, anc, _, _ = recvmsg(socks[fd], 2048, _CMSG_SPACE)
                except (BlockingIOError, InterruptedError):
                    continue
                read_at = now()
                if marker not in data:
                    others += 1
                elif fd in got:
                    duplicates += 1
                else:
                    got[fd] = (_kernel_time(anc), read_at, data)
        done_at = now()
        result = {"kind": kind, "spin": spin, "received": len(got), "clients": n, "others": others,
                  "duplicates": duplicates, "loop_done_at": done_at,
                  "kernel": _spread([k for k, _, _ in got.values()]),
                  "read": _spread([r for _, r, _ in got.values()])}
        if ack:
            result["ack"] = self.acknowledge(got)
        return result

    def acknowledge(self, got: dict[int, tuple[float, float, bytes]]) -> dict[str, Any]:
        """One ACK per client, all at once (encoded first: the burst is the server's load)."""
        acks = []
        for fd, (_, _, data) in got.items():
            nid = json.loads(data)["id"]
            acks.append((self.socks[fd], json.dumps(
                {"type": "ACK", "session": self.sessions[fd], "ids": [nid]},
                separators=(",", ":")).encode()))
        start = time.perf_counter()
        dropped = 0
        for sock, data in acks:
            try:
                sock.sendto(data, self.server)
            except (BlockingIOError, InterruptedError):
                dropped += 1  # a full send buffer; the server retransmits, the bench re-ACKs
        return {"sent": len(acks) - dropped, "dropped": dropped, "started_at": start,
                "send_s": time.perf_counter() - start}


def main() -> None:
    with open(sys.argv[1]) as f:
        receiver = Receiver(json.load(f))
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        result = receiver.round(cmd["kind"], float(cmd.get("timeout", 30)),
                                bool(cmd.get("ack", False)), bool(cmd.get("spin", True)))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
