"""How a row of `mangadex_circuit` reads to an operator (`mangasync status`, `/health`)."""

from __future__ import annotations

from datetime import UTC, datetime


def displayed_state(state: str, opened_until: datetime | None, now: datetime) -> str:
    """The breaker's state from the stored row and the clock alone, no MangaDex call: an open
    circuit whose time is up lets the next request through as a probe."""
    if state in ("open", "half_open") and opened_until is not None and _aware(opened_until) <= now:
        # For half_open: the last probe's claim lapsed, the next request probes again.
        return "half_open (probe due)"
    return state


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; the breaker writes UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
