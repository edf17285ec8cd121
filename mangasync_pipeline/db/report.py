"""What the MangaHub tables hold, as pandas frames for the operator's daily report.

Read-only and off the sync's path: one query per table, the rest is pandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import pandas as pd
from sqlalchemy import Connection, Engine, func, select

from mangasync_pipeline.db.tables import (
    chapters,
    genres,
    manga,
    manga_genres,
    notification_outbox,
    user_library,
    users,
)

NEW_CHAPTER = "new-chapter"
LATENCY_QUANTILES = {"p50": 0.5, "p95": 0.95, "max": 1.0}


def _frame(conn: Connection, stmt: object) -> pd.DataFrame:
    result = conn.execute(stmt)  # type: ignore[call-overload]
    return pd.DataFrame(result.all(), columns=list(result.keys()))


def _number(value: object) -> str | None:
    """A chapter number as one text whatever its spelling ("5", "5.0", Decimal("5.000"))."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    try:
        return format(Decimal(str(value)).normalize(), "f")
    except InvalidOperation:
        return str(value)


@dataclass
class MangaHubReport:
    manga_by_status: pd.DataFrame
    manga_by_content_rating: pd.DataFrame
    manga_by_genre: pd.DataFrame
    chapters_per_day: pd.DataFrame  # day x language, the last `days` days
    latency: pd.DataFrame  # stage, notifications, p50_s, p95_s, max_s
    outbox: pd.DataFrame  # status, notifications, oldest_age_s
    readers: pd.DataFrame  # figure, value
    duplicate_announcements: pd.DataFrame  # manga_id, language, chapter, announcements
    orphan_notifications: pd.DataFrame  # outbox_id, manga_id, language, chapter
    manga_total: int
    chapters_total: int


def build_report(engine: Engine, now: datetime, days: int = 30) -> MangaHubReport:
    since = now - timedelta(days=days)
    with engine.connect() as conn:
        catalogue = _frame(conn, select(manga.c.id, manga.c.status, manga.c.content_rating))
        links = _frame(conn, select(genres.c.name.label("genre"), manga_genres.c.manga_id)
                       .select_from(manga_genres.join(genres,
                                                      genres.c.id == manga_genres.c.genre_id)))
        recent = _frame(conn, select(chapters.c.translated_language.label("language"),
                                     chapters.c.readable_at)
                        .where(chapters.c.readable_at >= since, chapters.c.readable_at <= now))
        stored = _frame(conn, select(chapters.c.manga_id,
                                     chapters.c.translated_language.label("language"),
                                     chapters.c.chapter_number, chapters.c.readable_at,
                                     chapters.c.notified))
        outbox = _frame(conn, select(notification_outbox.c.id, notification_outbox.c.kind,
                                     notification_outbox.c.payload,
                                     notification_outbox.c.status,
                                     notification_outbox.c.created_at,
                                     notification_outbox.c.delivered_at))
        follows = _frame(conn, select(user_library.c.user_id, user_library.c.manga_id))
        readers = int(conn.execute(select(func.count()).select_from(users)).scalar() or 0)

    by_status = _count_by(catalogue, "status")
    by_rating = _count_by(catalogue, "content_rating")
    by_genre = (links.groupby("genre")["manga_id"].nunique().rename("manga").reset_index()
                .sort_values(["manga", "genre"], ascending=[False, True]))
    per_day = _chapters_per_day(recent, now, days)
    chapter_notes = _chapter_notifications(outbox)
    announced = stored[stored["notified"].astype(bool)] if len(stored) else stored
    return MangaHubReport(
        manga_by_status=by_status,
        manga_by_content_rating=by_rating,
        manga_by_genre=by_genre.reset_index(drop=True),
        chapters_per_day=per_day,
        latency=_latency(chapter_notes, announced),
        outbox=_outbox(outbox, now),
        readers=pd.DataFrame({"figure": ["readers", "follows", "readers following manga",
                                         "manga followed"],
                              "value": [readers, len(follows), follows["user_id"].nunique()
                                        if len(follows) else 0,
                                        follows["manga_id"].nunique() if len(follows) else 0]}),
        duplicate_announcements=_duplicates(chapter_notes),
        orphan_notifications=_orphans(chapter_notes, stored),
        manga_total=len(catalogue),
        chapters_total=len(stored),
    )


def _count_by(catalogue: pd.DataFrame, column: str) -> pd.DataFrame:
    """Manga per value of `column`, most first ("unknown" where MangaDex gave none)."""
    return (catalogue.assign(**{column: catalogue[column].fillna("unknown")})
            .groupby(column).size().rename("manga").reset_index()
            .sort_values(["manga", column], ascending=[False, True]).reset_index(drop=True))


def _chapters_per_day(recent: pd.DataFrame, now: datetime, days: int) -> pd.DataFrame:
    calendar = pd.date_range(end=pd.Timestamp(now).normalize(), periods=days, freq="D")
    if recent.empty:
        table = pd.DataFrame(index=calendar)
    else:
        recent = recent.assign(day=pd.to_datetime(recent["readable_at"], utc=True)
                               .dt.tz_localize(None).dt.normalize())
        table = (recent.groupby(["day", "language"]).size().unstack("language", fill_value=0)
                 .reindex(calendar.tz_localize(None), fill_value=0))
    table.index = [d.date().isoformat() for d in table.index]
    table.index.name = "day"
    return table.astype(int).reset_index()


def _chapter_notifications(outbox: pd.DataFrame) -> pd.DataFrame:
    notes = outbox[outbox["kind"] == NEW_CHAPTER] if len(outbox) else outbox
    columns = ["outbox_id", "manga_id", "language", "chapter", "created_at", "delivered_at"]
    if notes.empty:
        return pd.DataFrame(columns=columns)
    payload = pd.json_normalize(notes["payload"].tolist())
    return pd.DataFrame({
        "outbox_id": notes["id"].to_numpy(),
        "manga_id": payload["manga_id"].astype("int64").to_numpy(),
        "language": payload["language"].to_numpy(),
        "chapter": [_number(v) for v in payload.get("chapter", pd.Series([None] * len(notes)))],
        "created_at": pd.to_datetime(notes["created_at"], utc=True).to_numpy(),
        "delivered_at": pd.to_datetime(notes["delivered_at"], utc=True).to_numpy(),
    })


def _announced_numbers(announced: pd.DataFrame) -> pd.DataFrame:
    if announced.empty:
        return pd.DataFrame(columns=["manga_id", "language", "chapter", "readable_at"])
    frame = announced.assign(chapter=announced["chapter_number"].map(_number),
                             readable_at=pd.to_datetime(announced["readable_at"], utc=True))
    # The first time a number became readable is when readers could first have heard of it.
    return (frame.dropna(subset=["chapter"])
            .groupby(["manga_id", "language", "chapter"], as_index=False)["readable_at"].min())


def _latency(notes: pd.DataFrame, announced: pd.DataFrame) -> pd.DataFrame:
    joined = notes.merge(_announced_numbers(announced), on=["manga_id", "language", "chapter"])
    rows = []
    for stage, column in (("readable -> notification stored", "created_at"),
                          ("readable -> delivered to the server", "delivered_at")):
        seconds = ((pd.to_datetime(joined[column], utc=True)
                    - pd.to_datetime(joined["readable_at"], utc=True))
                   .dt.total_seconds().dropna()) if len(joined) else pd.Series(dtype=float)
        row: dict[str, object] = {"stage": stage, "notifications": int(len(seconds))}
        for name, q in LATENCY_QUANTILES.items():
            row[f"{name}_s"] = round(float(seconds.quantile(q)), 1) if len(seconds) else None
        rows.append(row)
    return pd.DataFrame(rows)


def _outbox(outbox: pd.DataFrame, now: datetime) -> pd.DataFrame:
    if outbox.empty:
        return pd.DataFrame({"status": ["pending"], "notifications": [0],
                             "oldest_age_s": [None]})
    created = pd.to_datetime(outbox["created_at"], utc=True)
    age = (pd.Timestamp(now) - created).dt.total_seconds()
    table = (outbox.assign(age=age).groupby("status")
             .agg(notifications=("id", "size"), oldest_age_s=("age", "max")).reset_index())
    if "pending" not in set(table["status"]):
        table = pd.concat([table, pd.DataFrame({"status": ["pending"], "notifications": [0],
                                                "oldest_age_s": [None]})])
    table["oldest_age_s"] = pd.to_numeric(table["oldest_age_s"]).round(0)
    return table.sort_values("status").reset_index(drop=True)


def _duplicates(notes: pd.DataFrame) -> pd.DataFrame:
    """Chapter numbers announced more than once (per manga and language)."""
    numbered = notes.dropna(subset=["chapter"])
    counts = (numbered.groupby(["manga_id", "language", "chapter"]).size()
              .rename("announcements").reset_index())
    return counts[counts["announcements"] > 1].reset_index(drop=True)


def _orphans(notes: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """NEW_CHAPTER notifications whose chapter number no stored chapter carries."""
    numbered = notes.dropna(subset=["chapter"])
    known = _announced_numbers(stored)[["manga_id", "language", "chapter"]]
    merged = numbered.merge(known, on=["manga_id", "language", "chapter"], how="left",
                            indicator=True)
    return (merged[merged["_merge"] == "left_only"]
            [["outbox_id", "manga_id", "language", "chapter"]].reset_index(drop=True))
