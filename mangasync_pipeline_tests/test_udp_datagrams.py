"""The endpoint's socket (notify/datagrams.py), on real loopback sockets: a wake-up of the loop
reads a batch of waiting datagrams, and sends reach their address."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mangasync_pipeline.notify.datagrams import READ_BATCH, DatagramSocket
from mangasync_pipeline.notify.sessions import Address

pytestmark = pytest.mark.process


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.socket = DatagramSocket()
        self.wakeups: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.socket.attach(transport)  # type: ignore[arg-type]

    def datagram_received(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        got = [data]
        self.socket.read_more(lambda more, _addr: got.append(more))
        self.wakeups.append(len(got))


def test_one_wakeup_reads_a_batch_and_sends_reach_their_address() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(_Endpoint,
                                                          local_addr=("127.0.0.1", 0))
        transport = endpoint.socket.transport
        assert transport is not None
        server = transport.get_extra_info("sockname")
        # Room for all of them (as the server asks): the default buffer drops some.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                      4 * 1024 * 1024)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        try:
            for n in range(READ_BATCH + 10):
                client.sendto(str(n).encode(), server)
            for _ in range(50):
                await asyncio.sleep(0.01)
                if sum(endpoint.wakeups) == READ_BATCH + 10:
                    break
            assert sum(endpoint.wakeups) == READ_BATCH + 10
            assert endpoint.wakeups[0] == READ_BATCH + 1  # the one asyncio read, and a batch
            endpoint.socket.send(b"PONG", client.getsockname())
            client.settimeout(2)
            assert client.recvfrom(100) == (b"PONG", server)
        finally:
            client.close()
            endpoint.socket.close()

    asyncio.run(main())
