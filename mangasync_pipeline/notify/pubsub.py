"""Fan-out between server processes sharing one PostgreSQL database (LISTEN/NOTIFY).

Messages carry ids only: `t <origin> <trigger_id>` after a trigger commits, and
`a <user>:<id> ...` after ACKs, so every process pushes to the sessions it holds and stops
retransmitting what another process saw acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from mangasync_pipeline.notify.store import NOTIFY_CHANNEL

log = logging.getLogger("mangasync.notify.pubsub")


def libpq_dsn(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def parse(payload: str) -> tuple[str, str, list[tuple[int, int]] | int] | None:
    """("t", origin, trigger_id) or ("a", "", [(user, id), ...]); None if unreadable."""
    parts = payload.split()
    try:
        if parts[0] == "t" and len(parts) == 3:
            return "t", parts[1], int(parts[2])
        if parts[0] == "a":
            pairs = [(int(u), int(i)) for u, i in (p.split(":", 1) for p in parts[1:])]
            return "a", "", pairs
    except (ValueError, IndexError):
        pass
    return None


async def listen(dsn: str, on_trigger: Callable[[int], None],
                 on_acks: Callable[[list[tuple[int, int]]], None], origin: str,
                 ready: asyncio.Event) -> None:
    """Run until cancelled, reconnecting after database errors."""
    lost = False
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            async with conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                ready.set()
                if lost:
                    lost = False
                    log.info("LISTEN %s restored", NOTIFY_CHANNEL)
                async for note in conn.notifies():
                    message = parse(note.payload)
                    if message is None:
                        continue
                    kind, sender, value = message
                    if kind == "t" and sender != origin and isinstance(value, int):
                        on_trigger(value)
                    elif kind == "a" and isinstance(value, list):
                        on_acks(value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Missed messages only delay pushes: the rows stay unread for the next REGISTER.
            # One line per outage, not one per reconnection attempt.
            if not lost:
                lost = True
                log.warning("LISTEN %s lost (%s); reconnecting every second",
                            NOTIFY_CHANNEL, " ".join(str(exc).split())[:300])
            await asyncio.sleep(1)


async def listen_channel(dsn: str, channel: str, on_payload: Callable[[str], None]) -> None:
    """Call `on_payload` for each message on `channel`, until cancelled (reconnecting)."""
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            async with conn:
                await conn.execute(f"LISTEN {channel}")
                async for note in conn.notifies():
                    on_payload(note.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("LISTEN %s lost (%s); reconnecting in 1 s", channel, exc)
            await asyncio.sleep(1)
