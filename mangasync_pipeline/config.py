"""Settings from environment variables (see CONTRACTS.md), validated once at start-up.

A bad value raises `ConfigError` whose message names the variable and the value, so that
commands can print it as one line and stop.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
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


def without_password(text: str) -> str:
    """`text` with the password of any URL in it replaced by ***: for messages and logs."""
    return re.sub(r"(:/*[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def database_url(value: str) -> str:
    """`value` checked and given the psycopg 3 driver we ship with; where a URL is used, as
    the raw variable can reach a resource through Dagster's EnvVar. Errors never show the
    password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = without_password(value)
    if "://" not in value or not value.split("://", 1)[0]:
        # (Not echoed: what is not a URL may hold a password anywhere.)
        raise ConfigError("DATABASE_URL is not a SQLAlchemy URL (sqlite:///... or "
                          "postgresql+psycopg://...)")
    scheme, _, driver = value.split("://", 1)[0].partition("+")
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(f"DATABASE_URL={shown!r}: only sqlite and postgresql are supported")
    if driver not in ("", "pysqlite" if scheme == "sqlite" else "psycopg"):
        raise ConfigError(f"DATABASE_URL={shown!r}: driver {driver!r} is not supported (leave "
                          "it out, or use postgresql+psycopg://)")
    if scheme == "postgres" or value.startswith("postgresql://"):
        # Normalise to the psycopg 3 driver we ship with.
        value = "postgresql+psycopg://" + value.split("://", 1)[1]
    try:
        make_url(value).port  # noqa: B018 (parsed now: a bad port is a clear error here)
    except (ArgumentError, ValueError) as exc:
        reason = without_password(str(exc)).replace(value, shown)
        raise ConfigError(f"DATABASE_URL={shown!r}: not a valid URL ({reason})") from None
    return value


def _languages(value: str) -> tuple[str, ...]:
    langs = tuple(part.strip() for part in value.split(",") if part.strip())
    pattern = re.compile(r"^[a-z]{2}(-[a-z]{2})?$")
    bad = [lang for lang in langs if not pattern.match(lang)]
    if not langs or bad:
        raise ConfigError(f"MANGASYNC_LANGUAGES={value!r}: expected language codes like en,pt-br")
    return langs


# --- catalogue scope and the chapter sensor ---------------------------------------------------
CONTENT_RATINGS = ("safe", "suggestive", "erotica", "pornographic")
DEFAULT_CONTENT_RATINGS = ("safe", "suggestive", "erotica")  # what MangaDex returns unasked
# Two requests a tick: at 10 s that is 4 % of MangaDex's 5 requests/s, shared by everything.
MIN_CHAPTER_SENSOR_INTERVAL = timedelta(seconds=10)


def _content_ratings(value: str) -> tuple[str, ...]:
    ratings = tuple(dict.fromkeys(p.strip().lower() for p in value.split(",") if p.strip()))
    bad = [r for r in ratings if r not in CONTENT_RATINGS]
    if not ratings or bad:
        raise ConfigError(f"MANGASYNC_CONTENT_RATINGS={value!r}: expected a comma-separated "
                          f"subset of {','.join(CONTENT_RATINGS)}")
    return tuple(r for r in CONTENT_RATINGS if r in ratings)


def _sensor_interval(value: str) -> timedelta:
    interval = parse_interval(value, "CHAPTER_SENSOR_INTERVAL")
    if interval < MIN_CHAPTER_SENSOR_INTERVAL:
        raise ConfigError(f"CHAPTER_SENSOR_INTERVAL={value!r}: at least 10s (each tick spends "
                          "two MangaDex requests)")
    return interval


def _schedule_interval(value: str) -> timedelta:
    """CHAPTER_POLL_INTERVAL drives a cron schedule, which fires at whole minutes and starts
    again every midnight: only whole minutes that divide a day can be honoured exactly."""
    interval = parse_interval(value, "CHAPTER_POLL_INTERVAL")
    seconds = interval.total_seconds()
    if seconds % 60 or 86400 % seconds:
        raise ConfigError(f"CHAPTER_POLL_INTERVAL={value!r}: must be whole minutes that divide "
                          "a day (e.g. 1m, 5m, 15m, 45m, 90m, 2h); the chapter sensor covers "
                          "shorter intervals (CHAPTER_SENSOR_INTERVAL)")
    return interval


def _notify_server_url(get: Callable[[str], str | None]) -> str | None:
    """NOTIFY_SERVER_URL, else its older name UDP_SERVER_URL (still read: deployments set it,
    though it is the server's HTTP trigger URL, not a UDP address)."""
    for name in ("NOTIFY_SERVER_URL", "UDP_SERVER_URL"):
        if (v := get(name)) is not None:
            return _url(name, v)
    return None


def _day(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: not a date (YYYY-MM-DD)") from None


# ---- MangaDex request policy (retries, timeouts, breaker, sensor deadline) ------------------

SENSOR_TICK_LIMIT = 60.0  # Dagster stops a sensor or schedule tick after this many seconds


@dataclass(frozen=True)
class ClientPolicy:
    """How patient the MangaDex client is. Every run that meets an outage fails within
    `failure_bound()` seconds of its first failed request, so the bound follows the budgets."""

    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 8.0
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    breaker_threshold: int = 10
    breaker_open_seconds: float = 300.0
    sensor_deadline: float = 40.0
    # The most a response body may inflate to: a 300 MB body or a gzip bomb ends here, within
    # a run's memory budget, instead of in the process's memory.
    max_body_bytes: int = 16 * 1024 * 1024

    def backoff_waits(self) -> list[float]:
        """The longest wait before each retry (the client adds up to 25 % jitter)."""
        return [min(self.backoff_max, self.backoff_base * 2**n) * 1.25
                for n in range(self.max_retries)]

    def failure_bound(self) -> float:
        """Seconds from a request's first failure to the error: every attempt times out."""
        attempts = self.max_retries + 1
        return attempts * (self.connect_timeout + self.read_timeout) + sum(self.backoff_waits())

    def for_sensor(self) -> ClientPolicy:
        """Inside a tick: at most one retry and timeouts that fit the deadline twice over."""
        per_attempt = self.sensor_deadline / 2.5
        return replace(self, max_retries=min(1, self.max_retries),
                       connect_timeout=min(self.connect_timeout, per_attempt / 3),
                       read_timeout=min(self.read_timeout, per_attempt),
                       backoff_max=min(self.backoff_max, 4.0))


def _client_policy(get: Callable[[str], str | None]) -> ClientPolicy:
    values: dict[str, object] = {}
    if (v := get("MANGADEX_MAX_RETRIES")) is not None:
        # No retries at all is a valid choice: one attempt per request.
        values["max_retries"] = 0 if v.strip() == "0" else int(
            _positive_number("MANGADEX_MAX_RETRIES", v, integer=True))
    if (v := get("MANGADEX_BREAKER_THRESHOLD")) is not None:
        values["breaker_threshold"] = int(
            _positive_number("MANGADEX_BREAKER_THRESHOLD", v, integer=True))
    if (v := get("MANGADEX_MAX_BODY_MB")) is not None:
        values["max_body_bytes"] = int(
            _positive_number("MANGADEX_MAX_BODY_MB", v, integer=True)) * 1024 * 1024
    for name, attr in (("MANGADEX_BACKOFF_BASE", "backoff_base"),
                       ("MANGADEX_BACKOFF_MAX", "backoff_max"),
                       ("MANGADEX_CONNECT_TIMEOUT", "connect_timeout"),
                       ("MANGADEX_READ_TIMEOUT", "read_timeout"),
                       ("MANGADEX_BREAKER_OPEN", "breaker_open_seconds"),
                       ("MANGADEX_SENSOR_DEADLINE", "sensor_deadline")):
        if (v := get(name)) is not None:
            values[attr] = parse_interval(v, name).total_seconds()
    deadline = values.get("sensor_deadline", ClientPolicy.sensor_deadline)
    if not isinstance(deadline, float) or deadline > SENSOR_TICK_LIMIT - 10:
        raise ConfigError(f"MANGADEX_SENSOR_DEADLINE={get('MANGADEX_SENSOR_DEADLINE')!r}: must "
                          f"leave 10 s of Dagster's {SENSOR_TICK_LIMIT:.0f} s tick (at most 50s)")
    return ClientPolicy(**values)  # type: ignore[arg-type]


def decode_master_key(text: str, origin: str) -> bytes:
    """The notification server's master key from its text form (URL-safe base64, at least 16
    bytes), or a one-line ConfigError naming where the text came from."""
    import base64
    import binascii

    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (ValueError, binascii.Error):
        key = b""
    if len(key) < 16:
        raise ConfigError(f"{origin}: not a master key (at least 16 bytes, URL-safe base64; "
                          "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return key


def _secret_key(value: str) -> str:
    decode_master_key(value, "MANGASYNC_SECRET_KEY")  # refuse a bad key at start-up
    return value.strip()


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
    notify_metrics_token: str | None = None  # /metrics only; else the trigger token guards it
    http_port: int = 8085
    udp_port: int = 9091
    bind: str = "127.0.0.1"
    partitions_start: date = date(2018, 1, 1)
    mangadex_policy: ClientPolicy = ClientPolicy()
    # Catalogue scope and the chapter sensor.
    content_ratings: tuple[str, ...] = DEFAULT_CONTENT_RATINGS
    chapter_sensor_interval: timedelta = timedelta(seconds=30)
    # Notification server: the master key readers' tokens derive from (notify/tokens.py).
    secret_key: str | None = None
    secret_key_file: str = DEFAULT_SECRET_KEY_FILE
    extra: dict[str, str] = field(default_factory=dict)
    # MANGASYNC_TITLE_LANGUAGE: None keeps MangaDex's main title.
    title_language: str | None = None
    # Operations: Slack-compatible webhook told of each failed run; how long runs are kept.
    alert_webhook: str | None = None
    run_retention: timedelta = timedelta(days=30)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        kwargs: dict[str, object] = {}
        if (v := get("DATABASE_URL")) is not None:
            kwargs["database_url"] = database_url(v)
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
            kwargs["chapter_poll_interval"] = _schedule_interval(v)
        if (v := get("CHAPTER_LOOKBACK")) is not None:
            kwargs["chapter_lookback"] = parse_interval(v, "CHAPTER_LOOKBACK")
        if (v := get("CHAPTER_BATCH_SIZE")) is not None:
            kwargs["chapter_batch_size"] = int(
                _positive_number("CHAPTER_BATCH_SIZE", v, integer=True))
        if (v := _notify_server_url(get)) is not None:
            kwargs["udp_server_url"] = v
        kwargs["notify_trigger_token"] = get("NOTIFY_TRIGGER_TOKEN")
        kwargs["notify_metrics_token"] = get("NOTIFY_METRICS_TOKEN")
        if (v := get("MANGASYNC_HTTP_PORT")) is not None:
            kwargs["http_port"] = _port("MANGASYNC_HTTP_PORT", v)
        if (v := get("MANGASYNC_UDP_PORT")) is not None:
            kwargs["udp_port"] = _port("MANGASYNC_UDP_PORT", v)
        if (v := get("MANGASYNC_BIND")) is not None:
            kwargs["bind"] = v
        if (v := get("MANGASYNC_PARTITIONS_START")) is not None:
            kwargs["partitions_start"] = _day("MANGASYNC_PARTITIONS_START", v)
        # -- titles (MANGASYNC_TITLE_LANGUAGE) --
        if (v := get("MANGASYNC_TITLE_LANGUAGE")) is not None:
            if not re.match(r"^[a-z]{2}(-[a-z]{2})?$", v):
                raise ConfigError(f"MANGASYNC_TITLE_LANGUAGE={v!r}: expected a language code "
                                  "like en")
            kwargs["title_language"] = v
        if "udp_server_url" not in kwargs:
            # Unset, the pipeline calls the server this same configuration starts, so that
            # moving the server to another port never leaves the triggers behind.
            kwargs["udp_server_url"] = default_udp_server_url(
                str(kwargs.get("bind", cls.bind)), int(kwargs.get("http_port", cls.http_port)))
        kwargs["mangadex_policy"] = _client_policy(get)
        # Catalogue scope and the chapter sensor.
        if (v := get("MANGASYNC_CONTENT_RATINGS")) is not None:
            kwargs["content_ratings"] = _content_ratings(v)
        if (v := get("CHAPTER_SENSOR_INTERVAL")) is not None:
            kwargs["chapter_sensor_interval"] = _sensor_interval(v)
        # Notification server: master key (validated when loaded, see notify/tokens.py).
        if (v := get("MANGASYNC_SECRET_KEY")) is not None:
            kwargs["secret_key"] = _secret_key(v)
        if (v := get("MANGASYNC_SECRET_KEY_FILE")) is not None:
            kwargs["secret_key_file"] = v
        if (v := get("MANGASYNC_ALERT_WEBHOOK")) is not None:
            _url("MANGASYNC_ALERT_WEBHOOK", v)  # checked, but kept as given: a path may end in /
            kwargs["alert_webhook"] = v.strip()
        if (v := get("MANGASYNC_RUN_RETENTION")) is not None:
            kwargs["run_retention"] = parse_interval(v, "MANGASYNC_RUN_RETENTION")
        return cls(**kwargs)  # type: ignore[arg-type]


def default_udp_server_url(bind: str, http_port: int) -> str:
    """Where a process on this machine reaches the notification server's HTTP listener."""
    host = "localhost" if bind in ("", "0.0.0.0", "::", "127.0.0.1") else bind
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http_port}"


def is_loopback(host: str) -> bool:
    """Whether a bind address only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_public_bind(settings: Settings) -> None:
    """ConfigError unless a non-loopback listener has a trigger token to guard it."""
    if not is_loopback(settings.bind) and not settings.notify_trigger_token:
        raise ConfigError(
            f"MANGASYNC_BIND={settings.bind!r} is not a loopback address: set "
            "NOTIFY_TRIGGER_TOKEN so the server does not take unauthenticated requests from "
            "the network")


def utcnow() -> datetime:
    return datetime.now(UTC)
