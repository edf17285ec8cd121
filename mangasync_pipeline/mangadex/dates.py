"""MangaDex timestamps: RFC 3339 in responses, `YYYY-MM-DDTHH:MM:SS` (UTC, no zone) in filters."""

from __future__ import annotations

from datetime import UTC, datetime

SINCE_FORMAT = "%Y-%m-%dT%H:%M:%S"


def parse_timestamp(value: object) -> datetime:
    """An aware UTC datetime; raises ValueError for anything else (callers skip the item)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"not a timestamp: {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        # The docs say UTC when unspecified.
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_optional_timestamp(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    return parse_timestamp(value)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC, like MangaDex does."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_since(value: datetime) -> str:
    """The exact form the `*Since` filters accept; fractions are dropped (inclusive filter)."""
    return as_utc(value).strftime(SINCE_FORMAT)


def to_second(value: datetime) -> datetime:
    """The resolution at which `*Since` filters compare."""
    return as_utc(value).replace(microsecond=0)
