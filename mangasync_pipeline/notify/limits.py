"""Rate limits of the UDP endpoint: token buckets and failure counters with exponential backoff.

Plain data on the event loop's thread; time is passed in, so the rules are easy to follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    capacity: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.updated = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class _Record:
    count: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


@dataclass
class FailureBackoff(Generic[K]):
    """After `limit` failures, each further failure blocks the key for base x 2^n seconds
    (capped); a key is forgotten after `forget_after` seconds without a failure."""

    limit: int
    base: float
    cap: float
    forget_after: float
    records: dict[K, _Record] = field(default_factory=dict)

    def blocked(self, key: K, now: float) -> bool:
        record = self.records.get(key)
        return record is not None and now < record.blocked_until

    def fail(self, key: K, now: float) -> None:
        record = self.records.get(key)
        if record is None or now - record.last > self.forget_after:
            record = self.records[key] = _Record()
        record.count += 1
        record.last = now
        excess = record.count - self.limit
        if excess >= 0:
            record.blocked_until = now + min(self.cap, self.base * 2.0 ** min(excess, 30))

    def sweep(self, now: float) -> None:
        self.records = {k: r for k, r in self.records.items()
                        if now - r.last <= self.forget_after or now < r.blocked_until}
