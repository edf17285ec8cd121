"""Settings from environment variables (see CONTRACTS.md), validated once at start-up.

A bad value raises `ConfigError` whose message names the variable and the value, so that
commands can print it as one line and stop.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlparse

DEFAULT_DATABASE_URL = "sqlite:///.mangasync/mangahub.sqlite"
DEFAULT_SECRET_KEY_FILE = ".mangasync/secret.key"  # beside the default database


class ConfigError(ValueError):
    """A setting has a value we cannot use."""


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_interval(value: str, name: str = "interval") -> timedelta:
    """`30s`, `5m`, `1h`, `2d` or a bare number of seconds."""
    match = _INTERVAL.match(value)
    if not match:
        raise ConfigError(f"{name}={value!r}: not an interval (use forms like 30s, 5m, 1h)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{name}={value!r}: must be greater than zero")
    return timedelta(seconds=seconds)


def _url(name: str, value: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise ConfigError(f"{name}={value!r}: not a valid {'/'.join(schemes)} URL")
    return value.rstrip("/")


def _positive_number(name: str, value: str, *, integer: bool = False) -> float:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name}={value!r}: not {kind}") from None
    if number <= 0:
        raise ConfigError(f"{name}={value!r}: must be greater than zero")
    return number


def _port(name: str, value: str) -> int:
    port = int(_positive_number(name, value, integer=True))
    if port > 65535:
        raise ConfigError(f"{name}={value!r}: not a port number (1-65535)")
    return port


def _database_url(value: str) -> str:
    if "://" not in value or not value.split("://", 1)[0]:
        raise ConfigError(f"DATABASE_URL={value!r}: not a SQLAlchemy URL (sqlite:///... or "
                          "postgresql+psycopg://...)")
    scheme = value.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(f"DATABASE_URL={value!r}: only sqlite and postgresql are supported")
    if scheme == "postgres" or value.startswith("postgresql://"):
        # Normalise to the psycopg 3 driver we ship with.
        value = "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def _languages(value: str) -> tuple[str, ...]:
    langs = tuple(part.strip() for part in value.split(",") if part.strip())
    pattern = re.compile(r"^[a-z]{2}(-[a-z]{2})?$")
    bad = [lang for lang in langs if not pattern.match(lang)]
    if not langs or bad:
        raise ConfigError(f"MANGASYNC_LANGUAGES={value!r}: expected language codes like en,pt-br")
    return langs


def _day(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: not a date (YYYY-MM-DD)") from None


def _secret_key(value: str) -> str:
    import base64
    import binascii

    raw = value.strip()
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (ValueError, binascii.Error):
        key = b""
    if len(key) < 16:
        raise ConfigError("MANGASYNC_SECRET_KEY: not a master key (URL-safe base64 of at least "
                          "16 bytes, e.g. from `python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'`)")
    return raw


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    mangadex_api_url: str = "https://api.mangadex.org"
    mangadex_uploads_url: str = "https://uploads.mangadex.org"
    mangadex_api_key: str | None = None
    mangadex_rate_limit: float = 5.0
    languages: tuple[str, ...] = ("en",)
    initial_sync_limit: int = 200
    new_manga_poll_interval: timedelta = timedelta(minutes=5)
    chapter_poll_interval: timedelta = timedelta(minutes=15)
    chapter_batch_size: int = 50
    chapter_lookback: timedelta = timedelta(hours=1)
    udp_server_url: str = "http://localhost:8085"
    notify_trigger_token: str | None = None
    http_port: int = 8085
    udp_port: int = 9091
    bind: str = "127.0.0.1"
    partitions_start: date = date(2018, 1, 1)
    # Notification server: the master key readers' tokens derive from (notify/tokens.py).
    secret_key: str | None = None
    secret_key_file: str = DEFAULT_SECRET_KEY_FILE
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        kwargs: dict[str, object] = {}
        if (v := get("DATABASE_URL")) is not None:
            kwargs["database_url"] = _database_url(v)
        if (v := get("MANGADEX_API_URL")) is not None:
            kwargs["mangadex_api_url"] = _url("MANGADEX_API_URL", v)
        if (v := get("MANGADEX_UPLOADS_URL")) is not None:
            kwargs["mangadex_uploads_url"] = _url("MANGADEX_UPLOADS_URL", v)
        kwargs["mangadex_api_key"] = get("MANGADEX_API_KEY")
        if (v := get("MANGADEX_RATE_LIMIT")) is not None:
            kwargs["mangadex_rate_limit"] = _positive_number("MANGADEX_RATE_LIMIT", v)
        if (v := get("MANGASYNC_LANGUAGES")) is not None:
            kwargs["languages"] = _languages(v)
        if (v := get("INITIAL_SYNC_LIMIT")) is not None:
            kwargs["initial_sync_limit"] = int(
                _positive_number("INITIAL_SYNC_LIMIT", v, integer=True))
        if (v := get("NEW_MANGA_POLL_INTERVAL")) is not None:
            kwargs["new_manga_poll_interval"] = parse_interval(v, "NEW_MANGA_POLL_INTERVAL")
        if (v := get("CHAPTER_POLL_INTERVAL")) is not None:
            kwargs["chapter_poll_interval"] = parse_interval(v, "CHAPTER_POLL_INTERVAL")
        if (v := get("CHAPTER_LOOKBACK")) is not None:
            kwargs["chapter_lookback"] = parse_interval(v, "CHAPTER_LOOKBACK")
        if (v := get("CHAPTER_BATCH_SIZE")) is not None:
            kwargs["chapter_batch_size"] = int(
                _positive_number("CHAPTER_BATCH_SIZE", v, integer=True))
        if (v := get("UDP_SERVER_URL")) is not None:
            kwargs["udp_server_url"] = _url("UDP_SERVER_URL", v)
        kwargs["notify_trigger_token"] = get("NOTIFY_TRIGGER_TOKEN")
        if (v := get("MANGASYNC_HTTP_PORT")) is not None:
            kwargs["http_port"] = _port("MANGASYNC_HTTP_PORT", v)
        if (v := get("MANGASYNC_UDP_PORT")) is not None:
            kwargs["udp_port"] = _port("MANGASYNC_UDP_PORT", v)
        if (v := get("MANGASYNC_BIND")) is not None:
            kwargs["bind"] = v
        if (v := get("MANGASYNC_PARTITIONS_START")) is not None:
            kwargs["partitions_start"] = _day("MANGASYNC_PARTITIONS_START", v)
        # Notification server: master key (validated when loaded, see notify/tokens.py).
        if (v := get("MANGASYNC_SECRET_KEY")) is not None:
            kwargs["secret_key"] = _secret_key(v)
        if (v := get("MANGASYNC_SECRET_KEY_FILE")) is not None:
            kwargs["secret_key_file"] = v
        return cls(**kwargs)  # type: ignore[arg-type]


def utcnow() -> datetime:
    return datetime.now(UTC)
