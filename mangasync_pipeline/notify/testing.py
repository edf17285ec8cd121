"""Helpers for tests, the benchmark and demos: catalogue rows and fast server timings."""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import replace

from sqlalchemy import Engine, insert

from mangasync_pipeline.config import Settings, utcnow
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.options import ServerOptions

# Protocol timings shrunk about twentyfold, for tests that are not about the defaults.
FAST = ServerOptions(heartbeat=1.0, ack_timeout=0.1, send_budget=1000, error_interval=0.2,
                     push_pace=0.001)


def fast_options(**changes: object) -> ServerOptions:
    return replace(FAST, **changes)  # type: ignore[arg-type]


def server_settings(db_url: str, **changes: object) -> Settings:
    return Settings(**{"database_url": db_url, "http_port": 0, "udp_port": 0,
                       "bind": "127.0.0.1", **changes})


def add_manga(engine: Engine, title: str = "Awesome Manga", slug: str | None = None) -> int:
    now = utcnow()
    mangadex_id = str(uuid.uuid4())
    with engine.begin() as conn:
        return int(conn.execute(insert(t.manga).values(
            mangadex_id=mangadex_id, slug=slug or f"manga-{mangadex_id[:8]}", title=title,
            created_at=now, catalogued_at=now, updated_at=now,
        ).returning(t.manga.c.id)).scalar_one())


def add_users(engine: Engine, count: int, prefix: str = "reader") -> list[tuple[int, str, str]]:
    """`count` users in one statement: (id, username, token)."""
    from mangasync_pipeline.notify.tokens import master_key, reader_token

    now = utcnow()
    key = master_key()
    rows = [{"username": f"{prefix}{i}", "token_version": 1, "created_at": now}
            for i in range(count)]
    with engine.begin() as conn:
        conn.execute(insert(t.users), rows)
        ids = dict(conn.execute(t.users.select().with_only_columns(
            t.users.c.username, t.users.c.id)).all())
    return [(int(ids[r["username"]]), r["username"], reader_token(key, int(ids[r["username"]]), 1))
            for r in rows]


def follow(engine: Engine, user_ids: list[int], manga_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(insert(t.user_library), [
            {"user_id": u, "manga_id": manga_id, "added_at": utcnow()} for u in user_ids])


def fetch_cookie(sock: socket.socket, timeout: float = 3.0) -> str:
    """The server's REGISTER cookie for this connected socket's address, by the real round
    trip: a REGISTER without one is answered RETRY (nothing else is checked)."""
    deadline = time.monotonic() + timeout
    while deadline - time.monotonic() > 0:
        # Asked again after 0.3 s: the server sends one address one RETRY per 0.25 s.
        sock.send(protocol.encode(protocol.register_message("cookie-please", "-")))
        sock.settimeout(0.3)
        try:
            while True:
                msg = protocol.decode(sock.recv(2000))
                if msg is not None and msg["type"] == "RETRY":
                    return str(msg["cookie"])
        except TimeoutError:
            continue
    raise TimeoutError("no RETRY from the server")
