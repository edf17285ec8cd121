"""Settings from environment variables (see CONTRACTS.md), validated once at start-up.

A bad value raises `ConfigError` whose message names the variable and the value, so that
commands can print it as one line and stop.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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


# The variables of the MangaDex request policy, each with the ClientPolicy field it sets.
POLICY_VARIABLES = {
    "MANGADEX_MAX_RETRIES": "max_retries", "MANGADEX_BACKOFF_BASE": "backoff_base",
    "MANGADEX_BACKOFF_MAX": "backoff_max", "MANGADEX_CONNECT_TIMEOUT": "connect_timeout",
    "MANGADEX_READ_TIMEOUT": "read_timeout", "MANGADEX_BREAKER_THRESHOLD": "breaker_threshold",
    "MANGADEX_BREAKER_OPEN": "breaker_open_seconds",
    "MANGADEX_SENSOR_DEADLINE": "sensor_deadline", "MANGADEX_MAX_BODY_MB": "max_body_bytes",
}


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


def _checked(check: Callable[[str, str], Any]) -> Any:
    """A field check: text from the environment goes through `check(variable, text)`, whose
    ConfigError names the variable; a typed value given in code is taken as it is."""

    def validate(value: Any, info: ValidationInfo) -> Any:
        return check(VARIABLES[info.field_name or ""], value) if isinstance(value, str) else value

    return BeforeValidator(validate)


def _interval_check(name: str, value: str) -> timedelta:
    return parse_interval(value, name)


def _positive_int(name: str, value: str) -> int:
    return int(_positive_number(name, value, integer=True))


def _title_language(name: str, value: str) -> str:
    if not re.match(r"^[a-z]{2}(-[a-z]{2})?$", value):
        raise ConfigError(f"{name}={value!r}: expected a language code like en")
    return value


def _alert_webhook(name: str, value: str) -> str:
    _url(name, value)  # checked, but kept as given: a path may end in /
    return value.strip()


def _aliases(alias: Any) -> list[str]:
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    return [alias] if isinstance(alias, str) else []


OLD_NOTIFY_SERVER_URL = "UDP_SERVER_URL"


class _Variables(EnvSettingsSource):
    """The variables of `env` (os.environ unless given) by their exact names; empty counts as
    unset. The request policy's variables are gathered into `mangadex_policy`."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value for name, value in self._env.items() if value not in (None, "")}

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        if "NOTIFY_SERVER_URL" not in self.env_vars and OLD_NOTIFY_SERVER_URL in self.env_vars:
            # Under the name it was given by, so that a bad value's error names it.
            values[OLD_NOTIFY_SERVER_URL] = values.pop("NOTIFY_SERVER_URL")
        policy = {name: self.env_vars[name] for name in POLICY_VARIABLES if name in self.env_vars}
        if policy:
            values["mangadex_policy"] = policy
        return values


class Settings(BaseSettings):
    """Every setting of mangasync. `Settings.from_env()` reads the environment, once per
    process (or `from_env(mapping)`, a given one); `Settings(...)` holds the defaults and what
    it is given, and reads nothing. A bad value raises one ConfigError naming the variable."""

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, env_ignore_empty=True, extra="forbid",
        validate_by_name=True, validate_by_alias=True, arbitrary_types_allowed=True)

    # Secrets (repr=False): a URL's password, tokens and keys stay out of reprs and logs.
    database_url: Annotated[str, _checked(lambda _n, v: database_url(v))] = Field(
        DEFAULT_DATABASE_URL, validation_alias="DATABASE_URL", repr=False)
    mangadex_api_url: Annotated[str, _checked(_url)] = Field(
        "https://api.mangadex.org", validation_alias="MANGADEX_API_URL")
    mangadex_uploads_url: Annotated[str, _checked(_url)] = Field(
        "https://uploads.mangadex.org", validation_alias="MANGADEX_UPLOADS_URL")
    mangadex_api_key: str | None = Field(None, validation_alias="MANGADEX_API_KEY", repr=False)
    mangadex_rate_limit: Annotated[float, _checked(_positive_number)] = Field(
        5.0, validation_alias="MANGADEX_RATE_LIMIT")
    languages: Annotated[tuple[str, ...], NoDecode, _checked(lambda _n, v: _languages(v))] = \
        Field(("en",), validation_alias="MANGASYNC_LANGUAGES")
    initial_sync_limit: Annotated[int, _checked(_positive_int)] = Field(
        200, validation_alias="INITIAL_SYNC_LIMIT")
    new_manga_poll_interval: Annotated[timedelta, _checked(_interval_check)] = Field(
        timedelta(minutes=5), validation_alias="NEW_MANGA_POLL_INTERVAL")
    chapter_poll_interval: Annotated[timedelta, _checked(lambda _n, v: _schedule_interval(v))] \
        = Field(timedelta(minutes=15), validation_alias="CHAPTER_POLL_INTERVAL")
    chapter_batch_size: Annotated[int, _checked(_positive_int)] = Field(
        50, validation_alias="CHAPTER_BATCH_SIZE")
    chapter_lookback: Annotated[timedelta, _checked(_interval_check)] = Field(
        timedelta(hours=1), validation_alias="CHAPTER_LOOKBACK")
    # The notification server's HTTP trigger URL: NOTIFY_SERVER_URL, else its older name
    # UDP_SERVER_URL (deployments still set it, though it is not a UDP address). Unset, the
    # server this same configuration starts (bind and MANGASYNC_HTTP_PORT), so that moving the
    # server to another port never leaves the triggers behind.
    udp_server_url: str = Field("", validation_alias=AliasChoices(
        "NOTIFY_SERVER_URL", OLD_NOTIFY_SERVER_URL))
    notify_trigger_token: str | None = Field(None, validation_alias="NOTIFY_TRIGGER_TOKEN",
                                             repr=False)
    # /metrics only; else the trigger token guards it.
    notify_metrics_token: str | None = Field(None, validation_alias="NOTIFY_METRICS_TOKEN",
                                             repr=False)
    http_port: Annotated[int, _checked(_port)] = Field(
        8085, validation_alias="MANGASYNC_HTTP_PORT")
    udp_port: Annotated[int, _checked(_port)] = Field(
        9091, validation_alias="MANGASYNC_UDP_PORT")
    bind: str = Field("127.0.0.1", validation_alias="MANGASYNC_BIND")
    partitions_start: Annotated[date, _checked(_day)] = Field(
        date(2018, 1, 1), validation_alias="MANGASYNC_PARTITIONS_START")
    mangadex_policy: Annotated[ClientPolicy, BeforeValidator(
        lambda v: _client_policy(v.get) if isinstance(v, Mapping) else v)] = ClientPolicy()
    # Catalogue scope and the chapter sensor.
    content_ratings: Annotated[tuple[str, ...], NoDecode,
                               _checked(lambda _n, v: _content_ratings(v))] = Field(
        DEFAULT_CONTENT_RATINGS, validation_alias="MANGASYNC_CONTENT_RATINGS")
    chapter_sensor_interval: Annotated[timedelta, _checked(lambda _n, v: _sensor_interval(v))] \
        = Field(timedelta(seconds=30), validation_alias="CHAPTER_SENSOR_INTERVAL")
    # Notification server: the master key readers' tokens derive from (notify/tokens.py).
    secret_key: Annotated[str | None, _checked(lambda _n, v: _secret_key(v))] = Field(
        None, validation_alias="MANGASYNC_SECRET_KEY", repr=False)
    secret_key_file: str = Field(DEFAULT_SECRET_KEY_FILE,
                                 validation_alias="MANGASYNC_SECRET_KEY_FILE")
    # MANGASYNC_TITLE_LANGUAGE: None keeps MangaDex's main title.
    title_language: Annotated[str | None, _checked(_title_language)] = Field(
        None, validation_alias="MANGASYNC_TITLE_LANGUAGE")
    # Operations: Slack-compatible webhook told of each failed run (its URL is its secret);
    # how long runs are kept.
    alert_webhook: Annotated[str | None, _checked(_alert_webhook)] = Field(
        None, validation_alias="MANGASYNC_ALERT_WEBHOOK", repr=False)
    run_retention: Annotated[timedelta, _checked(_interval_check)] = Field(
        timedelta(days=30), validation_alias="MANGASYNC_RUN_RETENTION")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _one_error(exc) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: `from_env` is the one place the environment is read.
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _server_url(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for name in ("NOTIFY_SERVER_URL", OLD_NOTIFY_SERVER_URL, "udp_server_url"):
                if isinstance(values.get(name), str):
                    values = {**values, name: _url(VARIABLES["udp_server_url"]
                                                   if name == "udp_server_url" else name,
                                                   values[name])}
                    break
        return values

    @model_validator(mode="after")
    def _default_server_url(self) -> Settings:
        if not self.udp_server_url:
            # Frozen: set once here, before anyone reads it.
            self.__dict__["udp_server_url"] = default_udp_server_url(self.bind, self.http_port)
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings `env` (the process's environment unless given) describes."""
        return cls(**_Variables(cls, os.environ if env is None else env)())

    @classmethod
    def variables(cls) -> list[str]:
        """Every variable `from_env` reads, as CONTRACTS.md lists them."""
        names = [name for field in cls.model_fields.values()
                 for name in _aliases(field.validation_alias) if name.isupper()]
        return names + list(POLICY_VARIABLES)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`, checked as any value given in code is."""
        return type(self)(**{**dict(self), **changes})


# Each field and the variable it is read from (CONTRACTS.md's configuration table); the
# MangaDex request policy is read from POLICY_VARIABLES into `mangadex_policy`.
VARIABLES = {name: names[0] for name, field in Settings.model_fields.items()
             if (names := _aliases(field.validation_alias))}


def _one_error(exc: ValidationError) -> ConfigError:
    """The first error as one line naming the variable (a check's own ConfigError as it is)."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    field = str(error["loc"][0]) if error["loc"] else "?"
    name = VARIABLES.get(field, field)
    value = error.get("input")
    shown = without_password(value) if isinstance(value, str) else value
    return ConfigError(f"{name}={shown!r}: {error['msg']}")


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
