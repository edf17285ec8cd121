"""The MangaHub schema (CONTRACTS.md), as SQLAlchemy Core tables.

The Alembic migrations in `migrations/versions/` create exactly these; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from mangasync_pipeline.bounds import (
    CONTENT_RATING_LEN,
    GENRE_NAME_LEN,
    LABEL_LEN,
    LANGUAGE_LEN,
    MANGADEX_ID_LEN,
    NUMBER_PRECISION,
    NUMBER_SCALE,
    SLUG_LEN,
    STATUS_LEN,
    TRIGGER_CHAPTER_LEN,
    TRIGGER_DEDUP_KEY_LEN,
    TRIGGER_LABEL_LEN,
    VOLUME_LEN,
)
from mangasync_pipeline.db.types import UTCDateTime

# SQLite only autoincrements INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

manga = Table(
    "manga",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("mangadex_id", String(MANGADEX_ID_LEN), nullable=False, unique=True),
    Column("slug", String(SLUG_LEN), nullable=False, unique=True),
    Column("title", Text, nullable=False),
    Column("author", Text),
    Column("status", String(STATUS_LEN)),
    # MangaDex's contentRating (safe, suggestive, erotica, pornographic).
    Column("content_rating", String(CONTENT_RATING_LEN)),
    Column("total_chapters", Integer),
    Column("description", Text),
    Column("cover_url", Text),
    # createdAt on MangaDex: the partition key of manga_catalogue.
    Column("created_at", UTCDateTime, nullable=False),
    Column("mangadex_updated_at", UTCDateTime),
    # When the manga entered our catalogue: chapters readable before it are history.
    Column("catalogued_at", UTCDateTime, nullable=False),
    Column("last_synced_at", UTCDateTime),
    Column("last_chapter_check", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_manga_created_at", "created_at"),
)

genres = Table(
    "genres",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(GENRE_NAME_LEN), nullable=False, unique=True),
)

manga_genres = Table(
    "manga_genres",
    metadata,
    Column("manga_id", BigId, ForeignKey("manga.id", ondelete="CASCADE"), nullable=False),
    Column("genre_id", BigId, ForeignKey("genres.id", ondelete="CASCADE"), nullable=False),
    UniqueConstraint("manga_id", "genre_id", name="uq_manga_genres_manga_id_genre_id"),
    Index("ix_manga_genres_genre_id", "genre_id"),
)

chapters = Table(
    "chapters",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("manga_id", BigId, ForeignKey("manga.id", ondelete="CASCADE"), nullable=False),
    Column("mangadex_chapter_id", String(MANGADEX_ID_LEN), nullable=False, unique=True),
    # Null for oneshots and for labels that are not numbers ("EXTRA"); `label` keeps the raw text.
    Column("chapter_number", Numeric(NUMBER_PRECISION, NUMBER_SCALE)),
    Column("label", String(LABEL_LEN)),
    Column("title", Text),
    Column("volume", String(VOLUME_LEN)),
    Column("pages", Integer),
    Column("translated_language", String(LANGUAGE_LEN), nullable=False),
    Column("external_url", Text),
    Column("scanlation_group", String(36)),
    Column("published_at", UTCDateTime),
    Column("readable_at", UTCDateTime),
    # Whether this chapter announced its label (at most one per manga, language, label).
    Column("notified", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_chapters_manga_lang_number", "manga_id", "translated_language", "chapter_number"),
    Index("ix_chapters_readable_at", "readable_at"),
)

# The highest chapter number published before a manga entered the catalogue, per language,
# learned from one feed request the first time the manga shows activity.
chapter_baselines = Table(
    "chapter_baselines",
    metadata,
    Column("manga_id", BigId, ForeignKey("manga.id", ondelete="CASCADE"), primary_key=True),
    Column("translated_language", String(LANGUAGE_LEN), primary_key=True),
    Column("max_number", Numeric(NUMBER_PRECISION, NUMBER_SCALE)),
    Column("checked_at", UTCDateTime, nullable=False),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("sync_type", String(50), nullable=False, unique=True),
    Column("last_run_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_cursor", Text),
    Column("status", String(20), nullable=False, default="idle"),
    Column("error_message", Text),
    Column("metadata", JSON),
    Column("updated_at", UTCDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    # No secret here: a reader's token is derived from the server's master key, the user id
    # and this version (bumped by `mangasync users rotate-token`). NULL: no token yet (a
    # reader carried over from a schema that stored tokens in plain text).
    Column("token_version", Integer),
    Column("created_at", UTCDateTime, nullable=False),
)

# Nonces of accepted REGISTERs, kept for the acceptance window so that a captured REGISTER
# cannot be replayed to another server on the same database or after a restart.
register_nonces = Table(
    "register_nonces",
    metadata,
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_register_nonces_expires_at", "expires_at"),
)

user_library = Table(
    "user_library",
    metadata,
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("manga_id", BigId, ForeignKey("manga.id", ondelete="CASCADE"), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    UniqueConstraint("user_id", "manga_id", name="uq_user_library_user_id_manga_id"),
    Index("ix_user_library_manga_id", "manga_id"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(20), nullable=False),
    # No foreign key on manga_id and trigger_id: a broadcast inserts one row per user, and
    # checking two more keys per row was most of its database time on PostgreSQL. The trigger
    # that created the rows validated the manga once.
    Column("manga_id", BigId, nullable=False),
    Column("chapter", String(TRIGGER_CHAPTER_LEN)),
    Column("title", Text, nullable=False),
    Column("message", Text),
    # MangaDex's chapter label as text ("12a", "10.5"); `chapter` is the number for ordering.
    Column("label", String(TRIGGER_LABEL_LEN)),
    Column("read", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    # The trigger that created it: one trigger, many users.
    Column("trigger_id", BigId),
    Index("ix_notifications_user_unread", "user_id", "read", "id"),
    Index("ix_notifications_trigger_id", "trigger_id"),
    Index("ix_notifications_dedup", "user_id", "type", "manga_id", "chapter", "created_at"),
)

# Server side: one row per accepted HTTP trigger, so a repeated dedup_key answers like the first.
notification_triggers = Table(
    "notification_triggers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dedup_key", String(TRIGGER_DEDUP_KEY_LEN), unique=True),
    Column("type", String(20), nullable=False),
    Column("manga_id", BigId, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("response", JSON),
    Column("created_at", UTCDateTime, nullable=False),
)

# Pipeline side: notifications waiting to be handed to the server, written in the same
# transaction as the rows that caused them.
notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dedup_key", String(TRIGGER_DEDUP_KEY_LEN), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),  # new-manga, new-chapter, manga-update
    Column("payload", JSON, nullable=False),
    Column("status", String(20), nullable=False, default="pending"),  # pending, delivered
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Index("ix_notification_outbox_pending", "status", "id"),
)

# `POST /api/manga/{ref}/sync` records a request here; a Dagster sensor turns it into a
# `sync_manga_job` run, so the server never talks to MangaDex itself.
manual_sync_requests = Table(
    "manual_sync_requests",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("manga_ref", String(200), nullable=False),  # as the caller gave it
    Column("mangadex_id", String(36), nullable=False),
    Column("manga_id", BigId),  # null when the caller named a MangaDex UUID not catalogued yet
    Column("caller", String(64), nullable=False),  # client address, for the per-caller limit
    # pending -> requested -> running -> succeeded / failed
    Column("status", String(20), nullable=False),
    Column("run_id", String(64)),
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_manual_sync_requests_status", "status", "id"),
    Index("ix_manual_sync_requests_mangadex_id", "mangadex_id", "status"),
    Index("ix_manual_sync_requests_caller", "caller", "created_at"),
)

# MangaDex circuit breaker, shared by every process that talks to MangaDex.
mangadex_circuit = Table(
    "mangadex_circuit",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("state", String(20), nullable=False, default="closed"),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("consecutive_successes", Integer, nullable=False, default=0),
    Column("opened_until", UTCDateTime),
    Column("last_error", Text),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Counters that sync runs in other processes add to, so /metrics tells the truth.
sync_metrics = Table(
    "sync_metrics",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("labels", String(200), primary_key=True, default=""),
    Column("value", Numeric(20, 3), nullable=False, default=0),
    Column("updated_at", UTCDateTime, nullable=False),
)

# MangaDex records that failed the checks of `mangadex/models.py` (or whose storing raised):
# skipped, not failed on, and read again on a later poll. One row per record and field.
quarantined_records = Table(
    "quarantined_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(20), nullable=False),  # manga, chapter
    Column("mangadex_id", String(MANGADEX_ID_LEN), nullable=False),
    # The MangaDex manga a chapter belongs to, so it is read again only while catalogued.
    Column("parent_id", String(MANGADEX_ID_LEN)),
    Column("field", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    UniqueConstraint("source", "mangadex_id", name="uq_quarantined_records_source"),
    Index("ix_quarantined_records_last_seen", "source", "last_seen"),
)
