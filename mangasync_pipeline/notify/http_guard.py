"""Limits on HTTP connections that uvicorn does not have: connections per client address (an
IPv6 client's /64) and a deadline for a request's headers (slowloris).

uvicorn offers `limit_concurrency` (one global count, answered 503 only after the connection
is accepted and parsed) and `timeout_keep_alive` (reset by every byte received), so thousands
of clients sending one header byte at a time held every file descriptor and `/health` went
unanswered. Here the protocol class uvicorn would use is wrapped: a connection beyond its
address's share, or beyond the process's total, takes the place of the oldest idle kept-alive
connection there, or is reset at once when none is idle; one that has not completed a
request's headers `header_timeout` seconds after it opened (or after the first byte of its next
request) is closed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import resource
from collections import OrderedDict
from typing import Any

from mangasync_pipeline.notify.limits import RefusalLog, source_of

log = logging.getLogger("mangasync.notify.http")

RESERVED_FDS = 256  # descriptors kept for the database, UDP, logs and the probes' connections


def total_limit() -> int:
    """Connections the process can hold and still open its database connections and files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, soft - RESERVED_FDS)


def guarded(protocol_class: type[Any], *, per_client: int, header_timeout: float,
            total: int | None = None) -> type[Any]:
    """`protocol_class` with per-address and total connection limits and a header deadline.

    At a limit, the oldest idle kept-alive connection (its answer written out, nothing received
    since) of the source (or, at the total, of anyone) is closed to make room; only when none
    is idle is the newcomer reset. Otherwise a few sources re-sending a request every minute
    could hold every slot and keep everyone else out. A client whose idle connection is closed
    opens another, as it does after the server's keep-alive timeout."""
    open_by_source: dict[str, int] = {}
    idle: OrderedDict[Any, None] = OrderedDict()  # oldest first
    idle_by_source: dict[str, OrderedDict[Any, None]] = {}
    opened = [0]
    most = total_limit() if total is None else total
    refusals = RefusalLog(log.warning)

    def make_room(source: str | None) -> bool:
        """Close the oldest idle connection (of `source`, or of anyone) whose answer is
        written out: closing one still being written would free its slot while its
        descriptor waits for a client that may never read. A few are looked at, not all."""
        pool = idle if source is None else idle_by_source.get(source)
        for victim in itertools.islice(pool or (), 16):
            if victim.transport.get_write_buffer_size() == 0:
                victim._release()
                victim.transport.close()
                return True
        return False

    class Guarded(protocol_class):  # type: ignore[misc,valid-type]
        _source: str | None = None
        _refused = False
        _request_begun = False
        _deadline: asyncio.TimerHandle | None = None
        _armed_cycle: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if peer else ""
            source = source_of(host)  # an IPv6 client's /64 shares one address's slots
            loop = asyncio.get_running_loop()
            count = open_by_source.get(source, 0)
            # Room is made only for a newcomer that then gets in: its own source's idle
            # connection first; someone else's only at the total, and only when its source
            # has a slot free (else a refused newcomer would still cost another reader one).
            why = None
            if count >= per_client and not make_room(source):
                why = f"{count} connections open from it"
            elif opened[0] >= most and not make_room(None):
                why = f"{opened[0]} connections open in all"
            if why is not None:
                refusals.note(host, f"HTTP connection from {host} refused: {why}", loop.time())
                self._refused = True
                transport.abort()  # a reset, at once: the descriptor is free again
                return
            self._source = source
            open_by_source[source] = open_by_source.get(source, 0) + 1
            opened[0] += 1
            super().connection_made(transport)
            self._arm()

        def _release(self) -> None:
            """This connection no longer counts (closed, or being closed to make room)."""
            source, self._source = self._source, None
            if source is None:
                return
            self._not_idle(source)
            left = open_by_source.get(source, 1) - 1
            if left > 0:
                open_by_source[source] = left
            else:
                open_by_source.pop(source, None)
            opened[0] -= 1

        def _not_idle(self, source: str) -> None:
            if self in idle:
                del idle[self]
                mine = idle_by_source[source]
                del mine[self]
                if not mine:
                    del idle_by_source[source]

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return  # refused in connection_made: uvicorn never saw it
            self._release()
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Idle: no pipelined request under way, not even its first bytes (a complete one
            # made a new cycle). Whether its answer is written out is asked when room is
            # made (make_room skips one still being written).
            if self._source is not None and not self.transport.is_closing() and (
                    self.cycle is None or self.cycle.response_complete) and (
                    not self._mid_request()):
                idle[self] = None
                idle_by_source.setdefault(self._source, OrderedDict())[self] = None

        def _mid_request(self) -> bool:
            """Bytes of a next request are in, its headers not yet complete."""
            conn = getattr(self, "conn", None)  # h11 buffers them unparsed
            if conn is not None and conn.trailing_data[0]:
                return True
            return self._request_begun  # httptools: its parser said so

        def on_message_begin(self) -> None:  # httptools only
            # (data_received, which fed these bytes, already took it off the idle lists)
            self._request_begun = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:  # httptools only
            self._request_begun = False
            super().on_headers_complete()

        def _unsupported_upgrade_warning(self) -> None:
            # uvicorn logs two warnings per Upgrade request: a log flood on demand. Counted
            # and logged once a minute per source instead, as other refusals are.
            host = self.client[0] if self.client else ""
            refusals.note(host, f"Upgrade request from {host} answered as plain HTTP "
                          "(no WebSocket here)", asyncio.get_running_loop().time())

        def data_received(self, data: bytes) -> None:
            if self._source is not None:
                self._not_idle(self._source)
            # The first bytes of a new request: its headers are due within the deadline.
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()
            super().data_received(data)

        def _arm(self) -> None:
            self._disarm()
            self._armed_cycle = self.cycle
            self._deadline = asyncio.get_running_loop().call_later(header_timeout,
                                                                   self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.cycle is not self._armed_cycle:
                return  # a request's headers arrived meanwhile
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

    Guarded.__name__ = f"Guarded{protocol_class.__name__}"
    return Guarded
