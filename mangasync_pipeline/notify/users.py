"""Readers and their libraries, as plain functions over an engine (used by the CLI and tests)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.ids import is_uuid
from mangasync_pipeline.notify.tokens import master_key, reader_token

USERS_CHANNEL = "mangasync_users"  # payload: a username whose token changed or who is new

_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class UserError(ValueError):
    """Something a user asked for that cannot be done; the message is one line."""


class UnknownUser(UserError, LookupError):
    pass


class UnknownMangaRef(UserError, LookupError):
    pass


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    created_at: datetime
    library: int
    unread: int
    has_token: bool = True


@dataclass(frozen=True)
class MangaInfo:
    id: int
    mangadex_id: str
    slug: str
    title: str


def add_user(engine: Engine, username: str, key: bytes | None = None) -> tuple[int, str]:
    """Create a user; returns (id, token). Only the token's version is stored."""
    if not _USERNAME.match(username):
        raise UserError(f"username {username!r}: use 1-64 letters, digits or . _ @ -")
    key = master_key() if key is None else key
    try:
        with engine.begin() as conn:
            user_id = conn.execute(insert(t.users).values(
                username=username, token_version=1, created_at=utcnow())
                .returning(t.users.c.id)).scalar_one()
            _announce(conn, username)
    except IntegrityError:
        raise UserError(f"user {username!r} already exists") from None
    return int(user_id), reader_token(key, int(user_id), 1)


def rotate_token(engine: Engine, username: str, key: bytes | None = None) -> tuple[int, str]:
    """Give a user a new token; the old one stops working. Returns (id, new token)."""
    key = master_key() if key is None else key
    with engine.begin() as conn:
        user_id = _user_id(conn, username)
        u = t.users
        version = conn.execute(
            update(u).where(u.c.id == user_id)
            .values(token_version=func.coalesce(u.c.token_version, 0) + 1)
            .returning(u.c.token_version)).scalar_one()
        conn.execute(delete(t.register_nonces).where(t.register_nonces.c.user_id == user_id))
        _announce(conn, username)
    return user_id, reader_token(key, user_id, int(version))


def _announce(conn: Connection, username: str) -> None:
    """Tell running servers (PostgreSQL) to re-read this user before the next REGISTER."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:ch, :name)"),
                     {"ch": USERS_CHANNEL, "name": username})


def users_without_token(engine: Engine) -> list[str]:
    """Readers carried over from plain-text tokens: they need `users rotate-token`."""
    with engine.connect() as conn:
        return list(conn.execute(select(t.users.c.username)
                                 .where(t.users.c.token_version.is_(None))
                                 .order_by(t.users.c.username)).scalars())


def list_users(engine: Engine) -> list[UserInfo]:
    u, lib, n = t.users, t.user_library, t.notifications
    library = (select(func.count()).select_from(lib).where(lib.c.user_id == u.c.id)
               .scalar_subquery())
    unread = (select(func.count()).select_from(n)
              .where(n.c.user_id == u.c.id, n.c.read.is_(False)).scalar_subquery())
    with engine.connect() as conn:
        rows = conn.execute(select(u.c.id, u.c.username, u.c.created_at, library.label("lib"),
                                   unread.label("unread"), u.c.token_version)
                            .order_by(u.c.username)).all()
    return [UserInfo(int(r.id), r.username, r.created_at, int(r.lib), int(r.unread),
                     r.token_version is not None) for r in rows]


def _user_id(conn: Connection, username: str) -> int:
    user_id = conn.execute(select(t.users.c.id).where(t.users.c.username == username)).scalar()
    if user_id is None:
        raise UnknownUser(f"no user named {username!r} (see `mangasync users list`)")
    return int(user_id)


def resolve_manga(conn: Connection, ref: str) -> MangaInfo:
    """A manga by local id, MangaDex UUID or slug."""
    m = t.manga
    ref = ref.strip()
    if not ref or len(ref) > 200 or not ref.isprintable():
        # (A NUL would reach PostgreSQL, which refuses it in text: a 500, not a "no manga".)
        raise UnknownMangaRef(f"no manga {ref[:60]!r} in the catalogue (use a local id, a "
                              "slug or a MangaDex id)")
    if ref.isascii() and ref.isdigit() and int(ref) < 2**63:
        cond = m.c.id == int(ref)
    elif is_uuid(ref):
        cond = m.c.mangadex_id == ref.lower()
    else:
        cond = m.c.slug == ref
    row = conn.execute(select(m.c.id, m.c.mangadex_id, m.c.slug, m.c.title).where(cond)).first()
    if row is None and ref.isdigit():
        row = conn.execute(select(m.c.id, m.c.mangadex_id, m.c.slug, m.c.title)
                           .where(m.c.slug == ref)).first()
    if row is None:
        raise UnknownMangaRef(f"no manga {ref!r} in the catalogue (use a local id, a slug or "
                              "a MangaDex id)")
    return MangaInfo(int(row.id), row.mangadex_id, row.slug, row.title)


def library_add(engine: Engine, username: str, ref: str) -> tuple[MangaInfo, bool]:
    """Add a manga to a user's library; returns (manga, whether it was new there)."""
    with engine.begin() as conn:
        user_id = _user_id(conn, username)
        manga = resolve_manga(conn, ref)
        lib = t.user_library
        present = conn.execute(select(lib.c.user_id).where(
            lib.c.user_id == user_id, lib.c.manga_id == manga.id)).first()
        if present is None:
            conn.execute(insert(lib).values(user_id=user_id, manga_id=manga.id,
                                            added_at=utcnow()))
    return manga, present is None


def library_remove(engine: Engine, username: str, ref: str) -> tuple[MangaInfo, bool]:
    with engine.begin() as conn:
        user_id = _user_id(conn, username)
        manga = resolve_manga(conn, ref)
        lib = t.user_library
        result = conn.execute(delete(lib).where(lib.c.user_id == user_id,
                                                lib.c.manga_id == manga.id))
    return manga, bool(result.rowcount)


def library_list(engine: Engine, username: str) -> list[dict[str, Any]]:
    lib, m = t.user_library, t.manga
    with engine.connect() as conn:
        user_id = _user_id(conn, username)
        rows = conn.execute(
            select(m.c.id, m.c.slug, m.c.mangadex_id, m.c.title, m.c.status, lib.c.added_at)
            .join(lib, lib.c.manga_id == m.c.id).where(lib.c.user_id == user_id)
            .order_by(m.c.title)).all()
    return [dict(r._mapping) for r in rows]
