"""Two server processes on one PostgreSQL database: triggers and ACKs cross between them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from mangasync_pipeline.db import tables as t
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.client import NotificationClient
from mangasync_pipeline.notify.testing import add_manga, fast_options, follow, server_settings
from mangasync_pipeline.notify.users import add_user
from mangasync_pipeline_tests import web


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    yield eng
    eng.dispose()


def test_trigger_on_one_server_reaches_sessions_on_the_other(pg_url: str, engine: Engine) -> None:
    db_url = pg_url  # scale-out is PostgreSQL's LISTEN/NOTIFY; SQLite serves one process
    manga_id = add_manga(engine)
    alice, alice_token = add_user(engine, "alice")
    bob, bob_token = add_user(engine, "bob")
    follow(engine, [alice, bob], manga_id)
    # Retries would run for 2 + 4 + 8 + 16 s: clearing sooner can only be the remote ACK.
    options = fast_options(ack_timeout=2.0)
    with ServerHandle(server_settings(db_url), options) as a, \
            ServerHandle(server_settings(db_url), options) as b, \
            NotificationClient(*a.udp_addr, "alice", alice_token) as on_a, \
            NotificationClient(*b.udp_addr, "bob", bob_token) as on_b, \
            NotificationClient(*b.udp_addr, "alice", alice_token) as alice_on_b:
        on_a.register()
        on_b.register()
        alice_on_b.register()
        alice_on_b.drop_rate = 1.0  # this device never ACKs: only the other one does
        r = web.post(f"{a.http_url}/notify/new-chapter",
                       json={"manga_id": manga_id, "title": "Shared", "chapter": 3})
        assert r.json()["recipients"] == 2
        assert on_b.wait_for(1, 5)[0]["chapter"] == "3"  # held by server b
        assert on_a.wait_for(1, 5)[0]["chapter"] == "3"
        # Alice's ACK went to server a; server b stops retransmitting to her other device
        # long before its retries would run out.
        def retrying() -> int:
            return b.call(lambda s: sum(len(x.inflight) for x in s.udp.sessions.values()
                                        if x.username == "alice") if s.udp else -1)

        deadline = time.monotonic() + 10
        while retrying() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert retrying() == 0
        # ... and it did push to her device there (bob's and alice's).
        assert b.call(lambda s: s.udp.metrics.sent._value.get() if s.udp else 0) == 2
    with engine.connect() as conn:
        assert all(conn.execute(select(t.notifications.c.read)).scalars())
