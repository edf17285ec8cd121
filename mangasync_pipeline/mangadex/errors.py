"""Errors the MangaDex client raises; every message is one line a user can act on."""

from __future__ import annotations

from datetime import datetime


class MangaDexError(Exception):
    """Base of everything the client raises on purpose."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class MangaDexHTTPError(MangaDexError):
    """MangaDex answered with a status we do not retry (a 4xx other than 429, or 505+)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int,
        detail: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint)
        self.status = status
        self.detail = detail
        self.request_id = request_id


class MangaNotFoundError(MangaDexHTTPError):
    """404 for a manga: removed, hidden or never existed."""


class MalformedResponseError(MangaDexError):
    """The body is not the JSON envelope the endpoint documents."""


class MangaDexUnavailableError(MangaDexError):
    """Retries exhausted on 429/5xx/timeouts/connection errors."""


class CircuitOpenError(MangaDexUnavailableError):
    """The shared circuit breaker is open: the call failed fast without touching the network."""

    def __init__(self, message: str, *, probe_at: datetime | None = None) -> None:
        super().__init__(message)
        self.probe_at = probe_at  # when the breaker lets the next probe request through
