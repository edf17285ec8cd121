"""Dagster resources: thin, configurable wrappers over the plain-Python parts."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from dagster import ConfigurableResource, EnvVar, Failure
from pydantic import PrivateAttr
from sqlalchemy import Engine

from mangasync_pipeline.config import DEFAULT_DATABASE_URL, Settings, parse_interval
from mangasync_pipeline.db.engine import shared_engine
from mangasync_pipeline.db.migrate import SchemaError, check_schema
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.sync.notifier import DeliveryReport, Notifier

_checked: set[str] = set()
_clients: dict[tuple[Any, ...], MangaDexClient] = {}


class MangaHubDatabase(ConfigurableResource):  # type: ignore[type-arg]
    """The MangaHub database (SQLite file or PostgreSQL), schema-checked on first use."""

    url: str = DEFAULT_DATABASE_URL

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


class MangaDexResource(ConfigurableResource):  # type: ignore[type-arg]
    """The MangaDex API client; its limiter and breaker state live in the MangaHub database,
    so every run, sensor and server process shares one budget of requests."""

    api_url: str = "https://api.mangadex.org"
    uploads_url: str = "https://uploads.mangadex.org"
    api_key: str | None = None
    rate_limit: float = 5.0
    state_url: str = DEFAULT_DATABASE_URL

    def client(self) -> MangaDexClient:
        # One client per process and configuration: its connection pool outlives a run.
        key = (self.api_url, self.uploads_url, self.api_key, self.rate_limit, self.state_url)
        if key not in _clients:
            _clients[key] = MangaDexClient(
                self.api_url, uploads_url=self.uploads_url, api_key=self.api_key,
                rate_limit=self.rate_limit, state_url=self.state_url)
        return _clients[key]

    def sensor_client(self) -> MangaDexClient:
        """A client for work inside a sensor or schedule tick, which Dagster stops after 60 s:
        short timeouts and at most one retry, so a hung MangaDex gives a skip, not a timeout."""
        key = ("sensor", self.api_url, self.uploads_url, self.api_key, self.rate_limit,
               self.state_url)
        if key not in _clients:
            _clients[key] = MangaDexClient(
                self.api_url, uploads_url=self.uploads_url, api_key=self.api_key,
                rate_limit=self.rate_limit, state_url=self.state_url, timeout=(5.0, 15.0),
                max_retries=1, backoff_max=4.0)
        return _clients[key]


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


def _env(name: str, default: Any) -> Any:
    """An EnvVar where the variable is set (the UI shows where it came from), else the default."""
    return EnvVar(name) if os.environ.get(name) else default


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:  # type: ignore[type-arg]
    # `settings` was validated already; EnvVar keeps secrets out of the run config shown in the UI.
    return {
        "mangahub": MangaHubDatabase(url=settings.database_url),
        "mangadex": MangaDexResource(
            api_url=settings.mangadex_api_url, uploads_url=settings.mangadex_uploads_url,
            api_key=_env("MANGADEX_API_KEY", None), rate_limit=settings.mangadex_rate_limit,
            state_url=settings.database_url),
        "notifier": NotifierResource(server_url=settings.udp_server_url,
                                     token=_env("NOTIFY_TRIGGER_TOKEN", None)),
        "sync_settings": SyncSettings(
            languages=",".join(settings.languages),
            initial_sync_limit=settings.initial_sync_limit,
            chapter_lookback=f"{int(settings.chapter_lookback.total_seconds())}s",
            content_ratings=",".join(settings.content_ratings)),
    }
