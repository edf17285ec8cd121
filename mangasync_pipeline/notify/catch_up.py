"""Catch-up: a session's unread notifications, from the database, oldest first, a page at a
time, before the live ones that arrived meanwhile.

It starts once the session's address has proved it receives (it echoed the session id);
sessions validated together share one query for their first pages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mangasync_pipeline.notify.directory import UserDirectory
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.sessions import Session
from mangasync_pipeline.notify.store import Notice

log = logging.getLogger("mangasync.notify.udp")


def add_page(session: Session, page: list[Notice], page_size: int) -> bool:
    """Queue a page of unread notifications; after the last page (a short one), the live ones
    that waited behind the catch-up, all once each. True if the session now has something to
    push or more to load."""
    for notice in page:
        if notice.id not in session.seen:
            session.seen.add(notice.id)
            session.queue.append(notice)
    if len(page) >= page_size:
        session.more_after = page[-1].id
    else:
        session.more_after = None
        session.catching_up = False
        live, session.live_pending = session.live_pending, []
        for notice in live:
            if notice.id not in session.seen:
                session.seen.add(notice.id)
                session.queue.append(notice)
    return bool(session.queue) or session.more_after is not None


class CatchUp:
    def __init__(self, loop: asyncio.AbstractEventLoop, options: ServerOptions,
                 directory: UserDirectory,
                 spawn: Callable[[Awaitable[Any]], Any],
                 pump: Callable[[Session, float], None]) -> None:
        self.loop = loop
        self.opt = options
        self.directory = directory
        self.spawn = spawn
        self.pump = pump
        self._validating: list[Session] = []
        self._validate_handle: asyncio.TimerHandle | None = None

    def validated(self, session: Session) -> None:
        """The address echoed the session id: it receives. Remember it; start the catch-up."""
        session.validated = True
        self._validating.append(session)
        if self._validate_handle is None:
            # Gathered like REGISTERs: one query loads the first page of many sessions.
            self._validate_handle = self.loop.call_later(self.opt.register_batch_delay,
                                                         self._flush_validating)

    def _flush_validating(self) -> None:
        self._validate_handle = None
        batch, self._validating = self._validating, []
        if batch:
            self.spawn(self._first_page(batch))

    async def _first_page(self, batch: list[Session]) -> None:
        try:
            pages = await self.directory.run(self.directory.store.first_unread,
                                             {s.user_id for s in batch},
                                             self.opt.catch_up_page)
        except Exception as exc:
            log.warning("unread notifications of %d users unavailable: %s", len(batch), exc)
            pages = {}
        for session in batch:
            if not session.closed:
                self._add(session, pages.get(session.user_id, []))

    def load_more(self, session: Session) -> None:
        """The next page, for a session whose queue ran dry (`session.loading` is set)."""
        self.spawn(self._load_more(session))

    async def _load_more(self, session: Session) -> None:
        after = session.more_after or 0
        try:
            _, page = await self.directory.run(self.directory.store.unread, session.user_id,
                                               self.opt.catch_up_page, after)
        except Exception as exc:
            log.warning("unread notifications of user %s unavailable: %s", session.user_id, exc)
            page = []
        finally:
            session.loading = False
        if not session.closed:
            self._add(session, page)

    def _add(self, session: Session, page: list[Notice]) -> None:
        # Nothing to push and nothing more to load (a reader with nothing unread): no pump, so
        # no pause of the collector either, which is the whole process's.
        if add_page(session, page, self.opt.catch_up_page):
            self.pump(session, 0.0)
