"""The bounds of every field that reaches the database or a reader, in one place.

The schema (`db/tables.py`), the MangaDex models' checks (`mangadex/models.py`) and the
notification server's trigger validation (`notify/triggers.py`) all import these numbers, so a
column, the check in front of it and the server's limit cannot drift apart. This module imports
nothing of the project: every layer may depend on it without the data flowing backwards.
"""

from __future__ import annotations

from datetime import timedelta

# --- the MangaHub schema's columns -----------------------------------------------------------
MANGADEX_ID_LEN = 36  # a UUID
SLUG_LEN = 100
STATUS_LEN = 20  # manga.status: ongoing, completed, hiatus, cancelled
CONTENT_RATING_LEN = 16  # manga.content_rating: safe, suggestive, erotica, pornographic
GENRE_NAME_LEN = 100
LABEL_LEN = 16  # chapters.label: MangaDex's chapter label ("12a", "10.5", "EXTRA")
VOLUME_LEN = 16
LANGUAGE_LEN = 8  # chapters.translated_language: "en", "pt-br", "es-la"
INT_MAX = 2**31 - 1  # INTEGER columns: pages, total_chapters
# chapters.chapter_number is NUMERIC(12, 3): nine digits before the point.
NUMBER_PRECISION, NUMBER_SCALE = 12, 3
NUMBER_LIMIT = 10 ** (NUMBER_PRECISION - NUMBER_SCALE)  # chapter numbers stay below this

# --- the notification server's HTTP triggers (docs/PROTOCOL.md) -------------------------------
TRIGGER_TITLE_LEN = 500
TRIGGER_MESSAGE_LEN = 4000
TRIGGER_DEDUP_KEY_LEN = 200
TRIGGER_CHAPTER_LEN = 32
TRIGGER_LABEL_LEN = 32
TRIGGER_LANGUAGE_LEN = 16

# --- text cleaned at the boundary (longer free text is cut, not refused) ----------------------
TITLE_LEN = TRIGGER_TITLE_LEN  # a title is sent as the trigger's title as it is stored
NAME_LEN = 200  # author and artist names
DESCRIPTION_LEN = 10_000
EXTERNAL_URL_LEN = 512

# --- time -------------------------------------------------------------------------------------
# How far ahead of our clock a MangaDex createdAt or updatedAt may be: clocks differ by
# seconds, a record from year 9999 is not news and must not move any cursor.
CLOCK_SKEW = timedelta(minutes=5)

# The pipeline never sends what the server refuses: what it stores fits what the server takes.
assert LABEL_LEN <= TRIGGER_LABEL_LEN and LANGUAGE_LEN <= TRIGGER_LANGUAGE_LEN
assert len(str(NUMBER_LIMIT)) + 1 + NUMBER_SCALE <= TRIGGER_CHAPTER_LEN
