"""Dagster resources: the plain-Python parts, built from the one `Settings` as they are.

Nothing here is configured from run config: a resource is built where the code location
loads (`build_definitions(settings)`), from settings read and checked once, so no field is
declared twice and no string is parsed again. Secrets (the database URL's password, tokens,
the webhook) never reach run config or the UI: each resource's description shows what an
operator needs, without them. Assets, ops and sensors take them as `ResourceParam[...]`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from dagster import Failure, ResourceDefinition, ResourceParam, SkipReason
from sqlalchemy import Engine

from mangasync_pipeline.config import ClientPolicy, Settings
from mangasync_pipeline.db.engine import describe, shared_engine
from mangasync_pipeline.db.migrate import SchemaError, check_schema
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.sync.notifier import DeliveryReport, Notifier
from mangasync_pipeline.tls import tls_context

_checked: set[str] = set()
_clients: dict[tuple[Any, ...], MangaDexClient] = {}
_clients_lock = threading.Lock()


class MangaHubDatabase:
    """The MangaHub database (SQLite file or PostgreSQL), schema-checked on first use, on the
    process's one engine for its URL."""

    def __init__(self, url: str) -> None:
        self.url = url  # as Settings normalised it

    @property
    def backend(self) -> str:
        """`sqlite` or `postgres`: the UI's kind icon of the assets stored here."""
        return "sqlite" if self.url.startswith("sqlite") else "postgres"

    def engine_or_skip(self) -> Engine | SkipReason:
        """For a sensor tick: the engine, or the one-line reason the tick cannot use the
        database (e.g. not migrated) as the tick's skip."""
        try:
            return self.engine()
        except Failure as exc:
            return SkipReason(exc.description or "MangaHub database not usable")

    def engine(self) -> Engine:
        engine = shared_engine(self.url)
        if self.url not in _checked:
            try:
                check_schema(engine)
            except SchemaError as exc:
                # One line in the run's failure, not a traceback: the operator must migrate.
                raise Failure(description=str(exc), allow_retries=False) from None
            _checked.add(self.url)
        return engine

    def describe(self) -> str:
        return f"The MangaHub database, {describe(self.url)} (DATABASE_URL)."


class MangaDexResource:
    """The MangaDex API client; its limiter and breaker state live in the MangaHub database,
    so every run, sensor and server process shares one budget of requests. A run that meets
    an outage fails within `failure_bound()` seconds (the policy's MANGADEX_* settings)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def policy(self) -> ClientPolicy:
        return self.settings.mangadex_policy

    @property
    def rate_limit(self) -> float:
        return self.settings.mangadex_rate_limit

    def failure_bound(self) -> float:
        """Seconds from a run's first failed request to its failure, at worst."""
        return self.policy.failure_bound()

    def _cached(self, policy: ClientPolicy) -> MangaDexClient:
        # One client per process and configuration: its connection pool outlives a run.
        s = self.settings
        key = (s.mangadex_api_url, s.mangadex_uploads_url, s.title_language, s.mangadex_api_key,
               s.mangadex_rate_limit, s.database_url, policy)
        with _clients_lock:
            if key not in _clients:
                _clients[key] = MangaDexClient(
                    s.mangadex_api_url, uploads_url=s.mangadex_uploads_url,
                    title_language=s.title_language, api_key=s.mangadex_api_key,
                    rate_limit=s.mangadex_rate_limit, state_url=s.database_url, policy=policy)
            return _clients[key]

    def client(self) -> MangaDexClient:
        return self._cached(self.policy)

    def sensor_client(self) -> MangaDexClient:
        """A client for work inside a sensor or schedule tick, which Dagster stops after 60 s:
        at most one retry, and every request of this tick (this thread) from now on shares one
        deadline of MANGADEX_SENSOR_DEADLINE, so a hung MangaDex gives a skip, not a timeout.
        Call it at the start of each tick."""
        client = self._cached(self.policy.for_sensor())
        client.start_deadline(self.policy.sensor_deadline)
        return client

    def describe(self) -> str:
        s, p = self.settings, self.policy
        return (f"The MangaDex API at {s.mangadex_api_url}: {s.mangadex_rate_limit:g} requests/s "
                f"shared by every process; {p.max_retries} retries; the circuit opens after "
                f"{p.breaker_threshold} failures for {p.breaker_open_seconds:g} s; a run fails "
                f"within {p.failure_bound():.0f} s of an outage"
                + (f"; titles in {s.title_language}" if s.title_language else "") + ".")


class NotifierResource:
    """Hands queued notifications to the MangaHub notification server."""

    def __init__(self, settings: Settings, timeout_seconds: float = 5.0) -> None:
        self.server_url = settings.udp_server_url
        self._token = settings.notify_trigger_token
        self._timeout = timeout_seconds
        self._notifier: Notifier | None = None  # its HTTP client, once something is delivered

    def deliver(self, engine: Engine, *, ignore_backoff: bool = False) -> DeliveryReport:
        if self._notifier is None:
            self._notifier = Notifier(self.server_url, self._token, self._timeout)
        return self._notifier.deliver(engine, ignore_backoff=ignore_backoff)

    def describe(self) -> str:
        return f"The notification server's HTTP triggers at {self.server_url}."


class AlertWebhook:
    """MANGASYNC_ALERT_WEBHOOK, where failed runs are told (defs/alerts.py)."""

    def __init__(self, url: str | None) -> None:
        self.url = url

    def post(self, text: str, attempts: int = 3) -> None:
        """Slack's incoming-webhook body, tried `attempts` times (1 s, then 2 s apart); the
        last error raises. Three tries of 5 s at most fit well inside a 60 s sensor tick."""
        assert self.url
        for attempt in range(attempts):
            try:
                # A chat webhook answers well under a second; a hanging one must not eat the tick.
                httpx.post(self.url, json={"text": text}, timeout=5.0,
                           verify=tls_context()).raise_for_status()
                return
            except httpx.HTTPError:
                if attempt == attempts - 1:
                    raise
                time.sleep(2 ** attempt)

    def describe(self) -> str:
        # The URL is the webhook's secret: only whether it is set.
        return ("Failed runs are posted to MANGASYNC_ALERT_WEBHOOK." if self.url
                else "MANGASYNC_ALERT_WEBHOOK is not set: failed runs are only counted.")


def describe_settings(settings: Settings) -> str:
    """What syncs, for the UI: the settings that decide what the runs read and keep."""
    return (f"Languages {', '.join(settings.languages)}; content ratings "
            f"{', '.join(settings.content_ratings)}; initial sync of "
            f"{settings.initial_sync_limit} manga; chapter lookback {settings.chapter_lookback}; "
            f"partitions from {settings.partitions_start}; runs kept "
            f"{settings.run_retention}.")


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources, by the keys assets, ops and sensors ask for."""
    return {
        "mangahub": MangaHubDatabase(settings.database_url),
        "mangadex": MangaDexResource(settings),
        "notifier": NotifierResource(settings),
        "settings": settings,
        "alert_webhook": AlertWebhook(settings.alert_webhook),
    }


def resource_definitions(settings: Settings) -> dict[str, ResourceDefinition]:
    """`build_resources` as Dagster shows them: each with its description, no config."""
    return {key: ResourceDefinition.hardcoded_resource(
                value, describe_settings(value) if isinstance(value, Settings)
                else value.describe())
            for key, value in build_resources(settings).items()}


# How assets, ops and sensors ask for them (by the keys above).
MangaHub = ResourceParam[MangaHubDatabase]
MangaDex = ResourceParam[MangaDexResource]
Notify = ResourceParam[NotifierResource]
SettingsParam = ResourceParam[Settings]
Alerts = ResourceParam[AlertWebhook]
