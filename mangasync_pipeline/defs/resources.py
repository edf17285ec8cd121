"""Dagster resources: thin, configurable wrappers over the plain-Python parts."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import httpx
from dagster import ConfigurableResource, EnvVar, Failure, SkipReason
from pydantic import Field, PrivateAttr
from sqlalchemy import Engine

from mangasync_pipeline.config import (
    DEFAULT_DATABASE_URL,
    ClientPolicy,
    Settings,
    database_url,
    parse_interval,
)
from mangasync_pipeline.db.engine import shared_engine
from mangasync_pipeline.db.migrate import SchemaError, check_schema
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.sync.notifier import DeliveryReport, Notifier

_checked: set[str] = set()
_clients: dict[tuple[Any, ...], MangaDexClient] = {}
_POLICY = ClientPolicy()


class MangaHubDatabase(ConfigurableResource):  # type: ignore[type-arg]
    """The MangaHub database (SQLite file or PostgreSQL), schema-checked on first use.

    `url` comes from DATABASE_URL as an EnvVar when that is set: the UI shows the variable's
    name, never the password inside the URL."""

    url: str = DEFAULT_DATABASE_URL

    @property
    def sqlalchemy_url(self) -> str:
        # The raw variable may say postgres:// (Heroku-style); SQLAlchemy needs the driver.
        return database_url(self.url)

    def engine_or_skip(self) -> Engine | SkipReason:
        """For a sensor tick: the engine, or the one-line reason the tick cannot use the
        database (e.g. not migrated) as the tick's skip."""
        try:
            return self.engine()
        except Failure as exc:
            return SkipReason(exc.description or "MangaHub database not usable")

    def engine(self) -> Engine:
        url = self.sqlalchemy_url
        engine = shared_engine(url)
        if url not in _checked:
            try:
                check_schema(engine)
            except SchemaError as exc:
                # One line in the run's failure, not a traceback: the operator must migrate.
                raise Failure(description=str(exc), allow_retries=False) from None
            _checked.add(url)
        return engine


class MangaDexResource(ConfigurableResource):  # type: ignore[type-arg]
    """The MangaDex API client; its limiter and breaker state live in the MangaHub database,
    so every run, sensor and server process shares one budget of requests. The fields are the
    whole request policy: a run that meets an outage fails within `failure_bound()` seconds."""

    api_url: str = Field(default="https://api.mangadex.org", description="MANGADEX_API_URL")
    uploads_url: str = Field(default="https://uploads.mangadex.org",
                             description="MANGADEX_UPLOADS_URL")
    api_key: str | None = Field(default=None, description="MANGADEX_API_KEY")
    title_language: str | None = Field(default=None, description="MANGASYNC_TITLE_LANGUAGE: "
                                       "a romanised main title gives way to this language's "
                                       "first alternative title (no MANGA_UPDATE)")
    rate_limit: float = Field(default=5.0, description="MANGADEX_RATE_LIMIT: requests per "
                              "second, all processes together")
    max_retries: int = Field(default=_POLICY.max_retries, description="MANGADEX_MAX_RETRIES: "
                             "retries of one request after a 429, 5xx, timeout or refused "
                             "connection")
    backoff_base_seconds: float = Field(default=_POLICY.backoff_base,
                                        description="MANGADEX_BACKOFF_BASE: first retry's wait, "
                                        "doubling each time")
    backoff_max_seconds: float = Field(default=_POLICY.backoff_max,
                                       description="MANGADEX_BACKOFF_MAX: cap of one wait")
    connect_timeout_seconds: float = Field(default=_POLICY.connect_timeout,
                                           description="MANGADEX_CONNECT_TIMEOUT")
    read_timeout_seconds: float = Field(default=_POLICY.read_timeout,
                                        description="MANGADEX_READ_TIMEOUT: longest silence "
                                        "while waiting for an answer")
    breaker_threshold: int = Field(default=_POLICY.breaker_threshold,
                                   description="MANGADEX_BREAKER_THRESHOLD: failures in a row "
                                   "that open the circuit")
    breaker_open_seconds: float = Field(default=_POLICY.breaker_open_seconds,
                                        description="MANGADEX_BREAKER_OPEN: how long an open "
                                        "circuit fails requests before letting a probe through")
    sensor_deadline_seconds: float = Field(default=_POLICY.sensor_deadline,
                                           description="MANGADEX_SENSOR_DEADLINE: all MangaDex "
                                           "work of one sensor tick (Dagster's limit is 60 s)")
    max_body_mb: int = Field(default=_POLICY.max_body_bytes // (1024 * 1024),
                             description="MANGADEX_MAX_BODY_MB: the most one response body "
                             "may inflate to")
    state_url: str = Field(default=DEFAULT_DATABASE_URL, description="DATABASE_URL: where the "
                           "shared rate limit and breaker state live (the MangaHub database)")

    def policy(self) -> ClientPolicy:
        return ClientPolicy(
            max_retries=self.max_retries, backoff_base=self.backoff_base_seconds,
            backoff_max=self.backoff_max_seconds, connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds, breaker_threshold=self.breaker_threshold,
            breaker_open_seconds=self.breaker_open_seconds,
            sensor_deadline=self.sensor_deadline_seconds,
            max_body_bytes=self.max_body_mb * 1024 * 1024)

    def failure_bound(self) -> float:
        """Seconds from a run's first failed request to its failure, at worst."""
        return self.policy().failure_bound()

    def _cached(self, policy: ClientPolicy) -> MangaDexClient:
        # One client per process and configuration: its connection pool outlives a run.
        key = (self.api_url, self.uploads_url, self.title_language, self.api_key,
               self.rate_limit, self.state_url, policy)
        if key not in _clients:
            _clients[key] = MangaDexClient(
                self.api_url, uploads_url=self.uploads_url, title_language=self.title_language,
                api_key=self.api_key,
                rate_limit=self.rate_limit, state_url=database_url(self.state_url),
                policy=policy)
        return _clients[key]

    def client(self) -> MangaDexClient:
        return self._cached(self.policy())

    def sensor_client(self) -> MangaDexClient:
        """A client for work inside a sensor or schedule tick, which Dagster stops after 60 s:
        at most one retry, and every request of this tick (this thread) from now on shares one
        deadline of `sensor_deadline_seconds`, so a hung MangaDex gives a skip, not a timeout.
        Call it at the start of each tick."""
        client = self._cached(self.policy().for_sensor())
        client.start_deadline(self.sensor_deadline_seconds)
        return client

    @classmethod
    def from_settings(cls, settings: Settings) -> MangaDexResource:
        policy = settings.mangadex_policy
        return cls(
            api_url=settings.mangadex_api_url, uploads_url=settings.mangadex_uploads_url,
            title_language=settings.title_language,
            api_key=_env("MANGADEX_API_KEY", None), rate_limit=settings.mangadex_rate_limit,
            max_retries=policy.max_retries, backoff_base_seconds=policy.backoff_base,
            backoff_max_seconds=policy.backoff_max,
            connect_timeout_seconds=policy.connect_timeout,
            read_timeout_seconds=policy.read_timeout, breaker_threshold=policy.breaker_threshold,
            breaker_open_seconds=policy.breaker_open_seconds,
            sensor_deadline_seconds=policy.sensor_deadline,
            max_body_mb=policy.max_body_bytes // (1024 * 1024),
            state_url=_database_url_source(settings))


class NotifierResource(ConfigurableResource):  # type: ignore[type-arg]
    """Hands queued notifications to the MangaHub notification server."""

    server_url: str = "http://localhost:8085"
    token: str | None = None
    timeout_seconds: float = 5.0

    _notifier: Notifier | None = PrivateAttr(default=None)

    def deliver(self, engine: Engine, *, ignore_backoff: bool = False) -> DeliveryReport:
        if self._notifier is None:
            self._notifier = Notifier(self.server_url, self.token, self.timeout_seconds)
        return self._notifier.deliver(engine, ignore_backoff=ignore_backoff)


class SyncSettings(ConfigurableResource):  # type: ignore[type-arg]
    """What to sync: languages, the initial import's size, the chapter lookback."""

    languages: str = "en"
    initial_sync_limit: int = 200
    chapter_lookback: str = "1h"
    # MangaDex content ratings the catalogue holds (MANGASYNC_CONTENT_RATINGS).
    content_ratings: str = "safe,suggestive,erotica"

    @property
    def rating_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.content_ratings.split(",") if p.strip())

    @property
    def language_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.languages.split(",") if p.strip())

    @property
    def lookback(self) -> timedelta:
        return parse_interval(self.chapter_lookback, "CHAPTER_LOOKBACK")


class AlertWebhook(ConfigurableResource):  # type: ignore[type-arg]
    """MANGASYNC_ALERT_WEBHOOK, where failed runs are told (defs/alerts.py)."""

    url: str | None = None

    def post(self, text: str, attempts: int = 3) -> None:
        """Slack's incoming-webhook body, tried `attempts` times (1 s, then 2 s apart); the
        last error raises. Three tries of 5 s at most fit well inside a 60 s sensor tick."""
        assert self.url
        for attempt in range(attempts):
            try:
                # A chat webhook answers well under a second; a hanging one must not eat the tick.
                httpx.post(self.url, json={"text": text}, timeout=5.0).raise_for_status()
                return
            except httpx.HTTPError:
                if attempt == attempts - 1:
                    raise
                time.sleep(2 ** attempt)


class RunRetention(ConfigurableResource):  # type: ignore[type-arg]
    """MANGASYNC_RUN_RETENTION: how long finished runs are kept (defs/retention.py)."""

    keep: str = "30d"

    def interval(self) -> timedelta:
        return parse_interval(self.keep, "MANGASYNC_RUN_RETENTION")


def _seconds(interval: timedelta) -> str:
    """`2592000s`, `0.001s`: an interval as the config's text form, never in exponent form."""
    return f"{interval.total_seconds():f}".rstrip("0").rstrip(".") + "s"


def _env(name: str, default: Any) -> Any:
    """An EnvVar where the variable is set (the UI shows where it came from), else the default."""
    return EnvVar(name) if os.environ.get(name) else default


def _database_url_source(settings: Settings) -> Any:
    """DATABASE_URL as an EnvVar when the settings came from it (the URL may hold a password);
    a URL given otherwise (tests, a non-secret SQLite path) as itself."""
    raw = os.environ.get("DATABASE_URL")
    if raw and database_url(raw) == settings.database_url:
        return EnvVar("DATABASE_URL")
    return settings.database_url


def _webhook_source(settings: Settings) -> Any:
    """Likewise for the alert webhook, whose URL is its secret."""
    raw = os.environ.get("MANGASYNC_ALERT_WEBHOOK", "").strip()
    return EnvVar("MANGASYNC_ALERT_WEBHOOK") if raw and raw == settings.alert_webhook \
        else settings.alert_webhook


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:  # type: ignore[type-arg]
    # `settings` was validated already; EnvVar keeps secrets out of the run config shown in the UI.
    return {
        "mangahub": MangaHubDatabase(url=_database_url_source(settings)),
        "mangadex": MangaDexResource.from_settings(settings),
        "notifier": NotifierResource(server_url=settings.udp_server_url,
                                     token=_env("NOTIFY_TRIGGER_TOKEN", None)),
        "sync_settings": SyncSettings(
            languages=",".join(settings.languages),
            initial_sync_limit=settings.initial_sync_limit,
            chapter_lookback=f"{int(settings.chapter_lookback.total_seconds())}s",
            content_ratings=",".join(settings.content_ratings)),
        "alert_webhook": AlertWebhook(url=_webhook_source(settings)),
        "run_retention": RunRetention(keep=_seconds(settings.run_retention)),
    }
