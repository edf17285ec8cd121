"""Manual sync requests: the server records them, a Dagster sensor runs them.

The server never calls MangaDex: `POST /api/manga/{ref}/sync` only writes a row here, and
`manual_sync_sensor` turns it into a `sync_manga_job` run. One request per manga is active at a
time, and a caller may make only a few a minute, so repetition cannot pile runs up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.notify.limits import source_of
from mangasync_pipeline.notify.users import UnknownMangaRef, resolve_manga

ACTIVE = ("pending", "requested", "running")
PER_CALLER_PER_MINUTE = 3
# A request still "active" after this long lost its run (e.g. the daemon was down): not blocking.
STALE_AFTER = timedelta(hours=1)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class TooManyRequests(RuntimeError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"at most {PER_CALLER_PER_MINUTE} manual syncs a minute per caller")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Recorded:
    request: dict[str, Any]
    created: bool  # False: an active request for the same manga already existed


def _as_dict(row: Any) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {"request_id": int(row.id), "manga_ref": row.manga_ref,
            "mangadex_id": row.mangadex_id, "manga_id": row.manga_id, "status": row.status,
            "run_id": row.run_id, "error": row.error, "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at)}


def record(engine: Engine, manga_ref: str, caller: str) -> Recorded:
    """Record a request for `manga_ref` (local id, slug or MangaDex UUID) by `caller`.

    LookupError for a manga we cannot name; TooManyRequests over the caller's limit.
    """
    r = t.manual_sync_requests
    now = utcnow()
    ref = manga_ref.strip()
    caller = source_of(caller)  # an IPv6 caller is its /64: a new address is no new allowance
    with engine.begin() as conn:
        try:
            found = resolve_manga(conn, ref)
            mangadex_id, manga_id = found.mangadex_id, found.id
        except UnknownMangaRef:
            if not _UUID.fullmatch(ref):
                raise LookupError(f"no manga {ref!r} in the catalogue (give a local id, a slug "
                                  "or a MangaDex UUID)") from None
            mangadex_id, manga_id = ref.lower(), None  # not catalogued yet: the run imports it
        active = conn.execute(select(r).where(
            r.c.mangadex_id == mangadex_id, r.c.status.in_(ACTIVE),
            r.c.created_at > now - STALE_AFTER).order_by(r.c.id.desc()).limit(1)).first()
        if active is not None:
            return Recorded(_as_dict(active), created=False)
        recent = conn.execute(select(func.count(), func.min(r.c.created_at)).where(
            r.c.caller == caller[:64], r.c.created_at > now - timedelta(minutes=1))).one()
        if recent[0] >= PER_CALLER_PER_MINUTE:
            wait = 60 - (now - recent[1]).total_seconds()
            raise TooManyRequests(max(1, int(wait) + 1))
        new_id = conn.execute(insert(r).values(
            manga_ref=ref[:200], mangadex_id=mangadex_id, manga_id=manga_id, caller=caller[:64],
            status="pending", created_at=now, updated_at=now).returning(r.c.id)).scalar_one()
        row = conn.execute(select(r).where(r.c.id == new_id)).one()
    return Recorded(_as_dict(row), created=True)


def get(engine: Engine, request_id: int) -> dict[str, Any] | None:
    r = t.manual_sync_requests
    with engine.connect() as conn:
        row = conn.execute(select(r).where(r.c.id == request_id)).first()
    return None if row is None else _as_dict(row)
