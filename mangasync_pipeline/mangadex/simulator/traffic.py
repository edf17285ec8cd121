"""Per-IP rate limiting, request statistics and injected faults."""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

ENDPOINTS = ("/manga", "/manga/{id}", "/manga/{id}/feed", "/chapter", "/manga/tag", "/ping")


class RateLimiter:
    """At most `limit` requests per client IP in any sliding 1-second window.

    Refused requests stay in the window, as with MangaDex: hammering while limited keeps
    the client limited.
    """

    def __init__(self, limit: float | None) -> None:
        self.limit = limit if limit else None
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, ip: str, now: float) -> float | None:
        """Record a request; None if allowed, else seconds until the window frees a slot."""
        if self.limit is None:
            return None
        with self._lock:
            window = self._seen.setdefault(ip, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            allowed = len(window) < self.limit
            window.append(now)
            if allowed:
                return None
            # Retry succeeds once enough of the oldest entries (this refusal included) have
            # left the window for it to hold fewer than `limit`.
            idx = len(window) - math.ceil(self.limit)
            return max(0.0, window[idx] + 1.0 - now)


class Stats:
    """What the simulator has seen since the last reset (MangaDex endpoints only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
            self.by_status: dict[str, int] = {}
            self.total = 0
            self.max_per_second = 0
            self.rate_limited = 0
            self._window: deque[float] = deque()

    def arrived(self, endpoint: str, now: float) -> None:
        with self._lock:
            self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
            self.total += 1
            w = self._window
            w.append(now)
            while w[0] <= now - 1.0:
                w.popleft()
            self.max_per_second = max(self.max_per_second, len(w))

    def answered(self, status: int | str) -> None:
        with self._lock:
            key = str(status)
            self.by_status[key] = self.by_status.get(key, 0) + 1
            if status == 429:
                self.rate_limited += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "by_status": dict(self.by_status),
                "total": self.total,
                "max_per_second": self.max_per_second,
                "rate_limited": self.rate_limited,
            }


@dataclass
class FaultState:
    error_rate: float = 0.0
    error_status: int = 500
    burst_429: int = 0
    retry_after: int = 1
    latency_ms: int = 0
    malformed: int = 0
    truncated: int = 0
    drop: int = 0
    bad_items: int = 0
    bad_item_kind: str = "no_attributes"
    shuffle_ties: int = 0
    # Hostile bodies: the next N answers are `oversized_mb` MB of JSON, a gzip bomb that
    # inflates to `bomb_mb` MB, or the real body one byte every `drip_ms` milliseconds.
    oversized: int = 0
    oversized_mb: int = 300
    gzip_bomb: int = 0
    bomb_mb: int = 1024
    drip: int = 0
    drip_ms: int = 10_000


@dataclass
class Decision:
    """What to do to one request, drawn atomically so counters are never double-spent."""

    drop: bool = False
    burst_429: bool = False
    retry_after: int = 1
    error_status: int | None = None
    latency_ms: int = 0
    malformed: bool = False
    truncated: bool = False
    hostile: str | None = None  # "oversized", "gzip_bomb" or "drip"
    size_mb: int = 0
    drip_ms: int = 0


class Faults:
    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed ^ 0x5EED)
        self.state = FaultState()

    def set(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            fields = set(FaultState.__dataclass_fields__)
            unknown = set(spec) - fields
            if unknown:
                raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
            for key, value in spec.items():
                if key == "bad_item_kind":
                    if value not in ("no_attributes", "bad_date"):
                        raise ValueError("bad_item_kind must be no_attributes or bad_date")
                    self.state.bad_item_kind = value
                elif key == "error_rate":
                    if not 0.0 <= float(value) <= 1.0:
                        raise ValueError("error_rate must be between 0 and 1")
                    self.state.error_rate = float(value)
                else:
                    if int(value) < 0:
                        raise ValueError(f"{key} must not be negative")
                    setattr(self.state, key, int(value))
            return asdict(self.state)

    def clear(self) -> None:
        with self._lock:
            self.state = FaultState()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self.state)

    def take_drop(self) -> bool:
        with self._lock:
            if self.state.drop > 0:
                self.state.drop -= 1
                return True
            return False

    def decide(self) -> Decision:
        """Faults for one request that got past the rate limiter."""
        s = self.state
        d = Decision(latency_ms=s.latency_ms, retry_after=s.retry_after)
        with self._lock:
            if s.burst_429 > 0:
                s.burst_429 -= 1
                d.burst_429 = True
                return d
            if s.error_rate > 0 and self._rng.random() < s.error_rate:
                d.error_status = s.error_status
                return d
            if s.malformed > 0:
                s.malformed -= 1
                d.malformed = True
            elif s.truncated > 0:
                s.truncated -= 1
                d.truncated = True
            for kind, size in (("oversized", s.oversized_mb), ("gzip_bomb", s.bomb_mb),
                               ("drip", 0)):
                if getattr(s, kind) > 0:
                    setattr(s, kind, getattr(s, kind) - 1)
                    d.hostile, d.size_mb, d.drip_ms = kind, size, s.drip_ms
                    break
        return d

    def take_shuffle(self) -> random.Random | None:
        """A random order for this chapter list's ties (items equal on every order key), if
        one is due: a search cluster whose replicas answer in turn can order them
        differently from one request to the next."""
        with self._lock:
            if self.state.shuffle_ties > 0:
                self.state.shuffle_ties -= 1
                return random.Random(self._rng.random())
            return None

    def take_bad_item(self) -> str | None:
        """Kind of broken item to slip into this (non-empty) list page, if one is due."""
        with self._lock:
            if self.state.bad_items > 0:
                self.state.bad_items -= 1
                return self.state.bad_item_kind
            return None
