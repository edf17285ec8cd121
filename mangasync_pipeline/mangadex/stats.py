"""What the client spent: requests by endpoint and status, retries and time waited."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Counters at one moment; `later - earlier` is what happened in between."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, status)
    retries: int = 0
    rate_limit_wait_s: float = 0.0
    retry_wait_s: float = 0.0
    items_skipped: int = 0
    circuit_rejections: int = 0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def by_endpoint(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (endpoint, _status), count in self.requests.items():
            out[endpoint] += count
        return dict(out)

    def __sub__(self, earlier: StatsSnapshot) -> StatsSnapshot:
        requests = {
            key: count - earlier.requests.get(key, 0)
            for key, count in self.requests.items()
            if count - earlier.requests.get(key, 0)
        }
        return StatsSnapshot(
            requests=requests,
            retries=self.retries - earlier.retries,
            rate_limit_wait_s=self.rate_limit_wait_s - earlier.rate_limit_wait_s,
            retry_wait_s=self.retry_wait_s - earlier.retry_wait_s,
            items_skipped=self.items_skipped - earlier.items_skipped,
            circuit_rejections=self.circuit_rejections - earlier.circuit_rejections,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, e.g. for Dagster output metadata."""
        requests: dict[str, dict[str, int]] = {}
        for (endpoint, status), count in sorted(self.requests.items()):
            requests.setdefault(endpoint, {})[status] = count
        return {
            "requests_total": self.total_requests,
            "requests": requests,
            "retries": self.retries,
            "rate_limit_wait_s": round(self.rate_limit_wait_s, 3),
            "retry_wait_s": round(self.retry_wait_s, 3),
            "items_skipped": self.items_skipped,
            "circuit_rejections": self.circuit_rejections,
        }


class ClientStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._retries = 0
        self._rate_wait = 0.0
        self._retry_wait = 0.0
        self._skipped = 0
        self._rejections = 0

    def add_request(self, endpoint: str, status: str) -> None:
        with self._lock:
            self._requests[(endpoint, status)] += 1

    def add_retry(self, delay: float) -> None:
        with self._lock:
            self._retries += 1
            self._retry_wait += delay

    def add_retry_wait(self, seconds: float) -> None:
        with self._lock:
            self._retry_wait += seconds

    def add_rate_wait(self, seconds: float) -> None:
        with self._lock:
            self._rate_wait += seconds

    def add_skipped(self, count: int) -> None:
        if count:
            with self._lock:
                self._skipped += count

    def add_circuit_rejection(self) -> None:
        with self._lock:
            self._rejections += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                requests=dict(self._requests),
                retries=self._retries,
                rate_limit_wait_s=self._rate_wait,
                retry_wait_s=self._retry_wait,
                items_skipped=self._skipped,
                circuit_rejections=self._rejections,
            )

    @staticmethod
    def delta(later: StatsSnapshot, earlier: StatsSnapshot) -> StatsSnapshot:
        return later - earlier
