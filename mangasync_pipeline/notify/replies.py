"""Answers a source can get without a session: ERROR and RETRY, each paced per address.

Both may go to a forged source address, so neither is ever longer than the datagram that
caused it (no amplification) and an address gets at most one per interval. Time is passed in;
the caller sends what these return.
"""

from __future__ import annotations

from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.sessions import Address

RETRY_INTERVAL = 0.25  # seconds between two RETRYs to one address (a flood gets few)
MAX_RETRIED = 100_000  # addresses remembered for that


class ErrorReplies:
    """ERRORs: at most one per address per `interval`, never longer than their cause."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last: dict[Address, float] = {}

    def reply(self, addr: Address, code: str, cause_len: int, message: str | None,
              now: float) -> bytes | None:
        """The ERROR to send now, or None (too soon for this address, or too long)."""
        last = self.last.get(addr)
        if last is not None and now - last < self.interval:
            return None
        data = protocol.encode(protocol.error_message(code, message))
        if len(data) > cause_len:
            data = protocol.encode(protocol.error_message(code))
        if len(data) > cause_len:
            return None
        self.last[addr] = now
        return data

    def sweep(self, now: float) -> None:
        self.last = {a: at for a, at in self.last.items() if now - at < self.interval}


class RetryReplies:
    """RETRYs with a cookie for REGISTERs that have none valid: a REGISTER shorter than a
    RETRY gets nothing, an address at most one per `RETRY_INTERVAL`."""

    def __init__(self, cookies: protocol.RegisterCookies) -> None:
        self.cookies = cookies
        self.sent: dict[Address, float] = {}
        self.size = len(protocol.encode({"type": "RETRY", "cookie": cookies.issue(("", 0))}))

    def reply(self, addr: Address, cause_len: int, now: float) -> bytes | None:
        last = self.sent.get(addr)
        if cause_len < self.size or (last is not None and now - last < RETRY_INTERVAL):
            return None
        if len(self.sent) >= MAX_RETRIED:
            self.sent.clear()
        self.sent[addr] = now
        return protocol.encode({"type": "RETRY", "cookie": self.cookies.issue(addr)})

    def sweep(self, now: float) -> None:
        self.sent = {a: at for a, at in self.sent.items() if now - at < RETRY_INTERVAL}
