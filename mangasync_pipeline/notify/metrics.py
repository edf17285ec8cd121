"""Prometheus metrics of the notification server, on a registry of its own.

Counters live in this process; unread notifications and the `sync_metrics` table are read from
the database at scrape time, so figures written by sync runs in other processes show up too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

# `*_created` series double every counter for no use here.
disable_created_metrics()

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (may be empty) as a dict with names Prometheus accepts."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        if "=" not in part:
            continue
        key, value = part.split("=", 1)
        key = _LABEL_BAD.sub("_", key.strip())
        if key and not key[0].isdigit() and not key.startswith("__"):
            labels[key] = value.strip()
    return labels


class _DatabaseCollector(Collector):
    def __init__(self, read: Callable[[], tuple[int, list[tuple[str, str, float]]]],
                 own_names: set[str]) -> None:
        self._read = read
        self._own = own_names
        self.error: Exception | None = None  # of the last scrape; None when it answered

    def collect(self) -> Iterable[Metric]:
        up = Metric("mangasync_database_up", "1 when the last scrape could read the database",
                    "gauge")
        try:
            pending, rows = self._read()
        except Exception as exc:
            # The process's own counters still say something useful during an outage.
            self.error = exc
            up.add_sample("mangasync_database_up", {}, 0)
            yield up
            return
        self.error = None
        up.add_sample("mangasync_database_up", {}, 1)
        yield up
        gauge = Metric("mangasync_notifications_pending",
                       "Notifications not yet acknowledged by any device", "gauge")
        gauge.add_sample("mangasync_notifications_pending", {}, pending)
        yield gauge
        families: dict[str, Metric] = {}
        for name, labels, value in rows:
            full = "mangasync_" + _NAME_BAD.sub("_", name.removeprefix("mangasync_"))
            if full in self._own:
                continue
            family = families.get(full)
            if family is None:
                family = families[full] = Metric(full, f"sync metric {name}", "gauge")
            family.add_sample(full, parse_labels(labels), value)
        yield from families.values()


class NotifyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.sent = Counter("mangasync_notifications_sent", "Notifications pushed (first try)",
                            registry=r)
        self.retransmitted = Counter("mangasync_notifications_retransmitted",
                                     "Notification datagrams sent again for lack of an ACK",
                                     registry=r)
        self.acknowledged = Counter("mangasync_notifications_acknowledged",
                                    "Notification ids acknowledged by clients", registry=r)
        self.given_up = Counter("mangasync_notifications_unacknowledged",
                                "Pushes abandoned after the last retry (stay unread)",
                                registry=r)
        self.triggers = Counter("mangasync_notify_triggers", "HTTP triggers by type and status",
                                ["type", "status"], registry=r)
        self.sessions = Gauge("mangasync_udp_sessions", "Live UDP sessions", registry=r)
        self.users_online = Gauge("mangasync_udp_users_online", "Users with a live session",
                                  registry=r)
        self.datagrams_rejected = Counter("mangasync_udp_datagrams_rejected",
                                          "Datagrams refused, by reason", ["reason"], registry=r)
        self.registers = Counter("mangasync_udp_registers", "REGISTER outcomes", ["outcome"],
                                 registry=r)
        self._own = {
            "mangasync_notifications_sent_total", "mangasync_notifications_retransmitted_total",
            "mangasync_notifications_acknowledged_total", "mangasync_notify_triggers_total",
            "mangasync_udp_sessions", "mangasync_notifications_pending",
            "mangasync_udp_users_online", "mangasync_notifications_unacknowledged_total",
            "mangasync_udp_datagrams_rejected_total", "mangasync_udp_registers_total",
            "mangasync_database_up",
        }
        self._database: _DatabaseCollector | None = None

    def attach_database(self, read: Callable[[], tuple[int, list[tuple[str, str, float]]]]
                        ) -> None:
        self._database = _DatabaseCollector(read, self._own)
        self.registry.register(self._database)

    @property
    def database_error(self) -> Exception | None:
        """Why the last scrape could not read the database (None if it could)."""
        return self._database.error if self._database is not None else None

    def render(self) -> bytes:
        """Text exposition; reads the database, so call it from a worker thread."""
        return generate_latest(self.registry)
