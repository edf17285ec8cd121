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
        yield from database_families(rows, self._own)


def _family_of(sample: str, histograms: set[str]) -> tuple[str, str]:
    """(family name, type) of one sample name from `sync_metrics`: `x_total` is counter x;
    `x_bucket`, `x_sum`, `x_count` are histogram x where x has buckets; anything else is a
    gauge (a value the writer sets, such as the records in quarantine)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample.removesuffix(suffix)
        if base != sample and base in histograms:
            return base, "histogram"
    if sample.endswith("_total"):
        return sample.removesuffix("_total"), "counter"
    return sample, "gauge"


def database_families(rows: Iterable[tuple[str, str, float]], own: set[str]) -> list[Metric]:
    """The rows of `sync_metrics`, written by sync runs in any process, as typed families
    named `mangasync_<row name>`."""
    named = [("mangasync_" + _NAME_BAD.sub("_", name.removeprefix("mangasync_")), labels, value)
             for name, labels, value in rows]
    histograms = {name.removesuffix("_bucket") for name, _, _ in named
                  if name.endswith("_bucket")}
    families: dict[str, Metric] = {}
    for sample, labels, value in named:
        if sample in own:
            continue
        family_name, kind = _family_of(sample, histograms)
        family = families.get(family_name)
        if family is None:
            family = families[family_name] = Metric(family_name, f"sync metric {family_name}",
                                                    kind)
        family.add_sample(sample, parse_labels(labels), value)
    for family in families.values():
        if family.type == "histogram":
            # Prometheus wants a histogram's buckets in ascending order of `le`.
            family.samples.sort(key=lambda s: (
                tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")),
                s.name != family.name + "_bucket", float(s.labels.get("le", "inf"))))
    return list(families.values())


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
