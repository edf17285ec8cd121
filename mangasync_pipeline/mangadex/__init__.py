"""MangaDex: the API client, its typed models and the mapping to MangaHub rows.

The simulator (a local MangaDex for tests and the demo) is in `.simulator`.
"""

from mangasync_pipeline.mangadex.client import (
    ALL_CONTENT_RATINGS,
    DEFAULT_INCLUDES,
    MangaDexClient,
)
from mangasync_pipeline.mangadex.errors import (
    CircuitOpenError,
    MalformedResponseError,
    MangaDexError,
    MangaDexHTTPError,
    MangaDexUnavailableError,
    MangaNotFoundError,
)
from mangasync_pipeline.mangadex.mapping import MangaRow, manga_row
from mangasync_pipeline.mangadex.models import Chapter, Manga, Page, Tag
from mangasync_pipeline.mangadex.stats import StatsSnapshot

__all__ = [
    "ALL_CONTENT_RATINGS",
    "DEFAULT_INCLUDES",
    "Chapter",
    "CircuitOpenError",
    "MalformedResponseError",
    "Manga",
    "MangaDexClient",
    "MangaDexError",
    "MangaDexHTTPError",
    "MangaDexUnavailableError",
    "MangaNotFoundError",
    "MangaRow",
    "Page",
    "StatsSnapshot",
    "Tag",
    "manga_row",
]
