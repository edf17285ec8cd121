"""The UDP endpoint's socket: datagrams read in batches, sent straight to the socket.

asyncio reads one datagram per wake-up of the loop; after a broadcast 10,000 ACKs (or a flood)
arrive at once, so each wake-up drains a batch through a duplicate of the socket (same queue).
Sends go through it too: what the transport's `sendto` does first, without its checks for cases
that do not arise here, was a tenth of the cost of a push in a broadcast.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from mangasync_pipeline.notify.sessions import Address

log = logging.getLogger("mangasync.notify.udp")

READ_BATCH = 256  # datagrams read per wake-up of the loop


def log_error(exc: Exception) -> None:
    # ICMP port unreachable and friends: the client is gone; expiry will tell.
    log.debug("udp error: %s", exc)


class DatagramSocket:
    """Sends and batched reads on an asyncio datagram transport's socket."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._queued = False  # the transport holds datagrams the kernel would not take yet

    def attach(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._sock = sock.dup()
            self._sock.setblocking(False)

    def send(self, data: bytes, addr: Address) -> None:
        sock = self._sock
        if sock is not None and not self._queued:
            try:
                sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._queued = True  # kernel buffer full: the transport queues, in order
            except OSError as exc:
                log_error(exc)
                return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, addr)
            self._queued = transport.get_write_buffer_size() > 0

    def read_more(self, handle: Callable[[bytes, Address], None]) -> None:
        """Hand up to `READ_BATCH` more datagrams already waiting to `handle`."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log_error(exc)
                return
            handle(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
