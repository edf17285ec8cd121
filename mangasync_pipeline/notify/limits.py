"""Rate limits of the UDP endpoint: token buckets and failure counters with exponential backoff.

Plain data on the event loop's thread; time is passed in, so the rules are easy to follow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def source_of(host: str) -> str:
    """Who a per-source limit counts: an IPv4 address, or the /64 of an IPv6 one.

    An IPv6 subscriber is given at least a /64, so 2^64 addresses: counted one by one, a
    single attacker would be 2^64 sources (a fresh share of every budget, a fresh backoff for
    every password guess, a log line each). An IPv4 client behind a dual-stack socket
    (::ffff:a.b.c.d) or a NAT64 gateway (64:ff9b::a.b.c.d) is its IPv4 address.
    """
    if ":" not in host:
        return host  # IPv4 (or not an address at all): as it is, at no parsing cost
    try:
        ip = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip in NAT64:  # an IPv4 client translated by NAT64 (RFC 6052): its IPv4 address
        return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"


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
    max_keys: int = 200_000  # beyond, the oldest quiet key is forgotten first
    records: dict[K, _Record] = field(default_factory=dict)

    def blocked(self, key: K, now: float) -> bool:
        record = self.records.get(key)
        return record is not None and now < record.blocked_until

    def fail(self, key: K, now: float) -> None:
        record = self.records.pop(key, None)  # re-inserted last: the dict is in failure order
        if record is None or now - record.last > self.forget_after:
            if len(self.records) >= self.max_keys:
                del self.records[next(iter(self.records))]
            record = _Record()
        self.records[key] = record
        record.count += 1
        record.last = now
        excess = record.count - self.limit
        if excess >= 0:
            record.blocked_until = now + min(self.cap, self.base * 2.0 ** min(excess, 30))

    def sweep(self, now: float) -> None:
        self.records = {k: r for k, r in self.records.items()
                        if now - r.last <= self.forget_after or now < r.blocked_until}


class FairBudget:
    """A global budget of `rate` per second, shared fairly by source.

    In each second, a source may take an equal share of the budget among the sources active
    in it or in the second before, and never more than half of it (room is always left for
    someone else). A newcomer's share is granted even when the others have
    used the second's budget (so one source flooding cannot keep a reader out), up to twice
    the budget in all. What a source is refused counts against it: what it asked beyond its
    share is carried into the next seconds as debt, paid off at one share a second, so a
    source that keeps sending over its share gets nothing until it slows down.
    """

    def __init__(self, rate: float, window: float = 1.0) -> None:
        self.capacity = max(1.0, rate * window)
        self.window = window
        self.started = 0.0
        self.used = 0
        self.counts: dict[str, float] = {}  # requests this window, refused ones and debt too
        self.previous: set[str] = set()
        self.active = 0  # sources in this window or the previous one
        self.share = self.capacity

    def take(self, source: str, now: float) -> bool:
        if now - self.started >= self.window:
            self._next_window(now)
        count = self.counts.get(source)
        if count is None:
            count = 0.0
            if source not in self.previous:
                self.active += 1
                self.share = max(1.0, self.capacity / max(2, self.active))
        self.counts[source] = count + 1
        if count >= self.share or self.used >= 2 * self.capacity:
            return False
        self.used += 1
        return True

    def _next_window(self, now: float) -> None:
        windows = int((now - self.started) / self.window)
        share = self.share
        # Debt: what a source asked beyond its share, less one share per window gone by.
        debts = {source: count - share * windows for source, count in self.counts.items()
                 if count - share * windows > 0}
        self.previous = set(self.counts) if windows < 2 else set(debts)
        self.active = len(self.previous)
        self.share = max(1.0, self.capacity / max(2, self.active))
        self.counts = debts
        self.used = 0
        self.started = now


class RefusalLog:
    """Refusals logged at most once per source per minute: a source's first refusal as it
    happens, then, while it goes on, one line a minute with the count, so a flood costs a line
    a minute, not one a datagram."""

    def __init__(self, log: Callable[[str], None], period: float = 60.0,
                 max_sources: int = 10_000) -> None:
        self.log = log
        self.period = period
        self.max_sources = max_sources
        self.started = 0.0
        self.more: dict[str, list[Any]] = {}  # source: [refusals not logged yet, last reason]
        self.recent: set[str] = set()  # sources refused in the last period: summed up only
        self.others = 0

    def note(self, host: str, reason: str, now: float) -> None:
        source = source_of(host)  # an IPv6 /64 rotating its addresses is one source here too
        if now - self.started >= self.period:
            self.flush(now)
        entry = self.more.get(source)
        if entry is not None:
            entry[0] += 1
            entry[1] = reason
        elif len(self.more) >= self.max_sources:
            self.others += 1
        elif source in self.recent:
            self.more[source] = [1, reason]
        else:
            self.more[source] = [0, reason]
            self.log(f"{reason} (from {source}; further refusals from it are counted and "
                     f"logged once a minute)")

    def flush(self, now: float) -> None:
        for source, (count, reason) in self.more.items():
            if count:
                self.log(f"{count} refusals from {source} in the last {self.period:g} s, "
                         f"the last: {reason}")
        if self.others:
            self.log(f"{self.others} refusals from further sources in the last "
                     f"{self.period:g} s")
        self.recent = set(self.more)
        self.more, self.others, self.started = {}, 0, now
