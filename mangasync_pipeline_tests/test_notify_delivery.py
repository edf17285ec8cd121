"""Pushing notifications over real UDP on loopback: online, offline catch-up, loss, restarts."""

from __future__ import annotations

import gc
import time

from sqlalchemy import Engine, select

from mangasync_pipeline.db import tables as t
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.client import NotificationClient
from mangasync_pipeline.notify.testing import add_manga, fast_options, follow, server_settings
from mangasync_pipeline.notify.users import add_user
from mangasync_pipeline_tests import web


def _unread(engine: Engine, user_id: int) -> list[int]:
    n = t.notifications
    with engine.connect() as conn:
        return list(conn.execute(select(n.c.id).where(n.c.user_id == user_id,
                                                      n.c.read.is_(False))).scalars())


def _wait_until(check: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_online_user_receives_pushes_and_ack_marks_them_read(
        server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine, "Awesome Manga")
    alice, token = add_user(engine, "alice")
    bob, bob_token = add_user(engine, "bob")
    follow(engine, [alice], manga_id)
    with NotificationClient(*server.udp_addr, "alice", token) as client:
        assert client.register()["unread"] == 0
        chapter = web.post(f"{server.http_url}/notify/new-chapter", json={
            "manga_id": manga_id, "title": "Awesome Manga", "chapter": "42.5",
            "chapter_title": "The Duel", "language": "en"})
        assert chapter.status_code == 202
        assert chapter.json()["recipients"] == 1  # bob does not follow it
        assert chapter.json()["online"] == 1
        got = client.wait_for(1, 5)
        assert got[0]["type"] == "NEW_CHAPTER"
        assert got[0]["chapter"] == "42.5"
        assert "label" in got[0]  # the MangaDex label as text, or null (protocol 2)
        assert got[0]["id"] == chapter.json()["notification_ids"][0]
        assert "The Duel" in got[0]["message"]
        assert got[0]["created_at"].endswith("Z")
        assert _wait_until(lambda: not _unread(engine, alice))
    with engine.connect() as conn:
        delivered = conn.execute(select(t.notifications.c.delivered_at)
                                 .where(t.notifications.c.user_id == alice)).scalar_one()
    assert delivered is not None
    assert _unread(engine, bob) == []


def test_offline_user_gets_every_unread_oldest_first_on_register(
        server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    user_id, token = add_user(engine, "carol")
    follow(engine, [user_id], manga_id)
    ids = []
    for number in range(1, 8):
        r = web.post(f"{server.http_url}/notify/new-chapter", json={
            "manga_id": manga_id, "title": "Awesome Manga", "chapter": number})
        assert r.json() == {"notification_ids": r.json()["notification_ids"],
                            "recipients": 1, "online": 0}
        ids += r.json()["notification_ids"]
    with NotificationClient(*server.udp_addr, "carol", token) as client:
        assert client.register()["unread"] == 7
        got = client.wait_for(7, 5)
        assert [m["id"] for m in got] == ids
        assert [m["chapter"] for m in got] == [str(n) for n in range(1, 8)]
    assert _wait_until(lambda: not _unread(engine, user_id))


def test_every_notification_shows_once_despite_30_percent_loss(
        db_url: str, engine: Engine) -> None:
    with ServerHandle(server_settings(db_url), fast_options(ack_timeout=0.3)) as server:
        _lossy_delivery(server, engine)


def _lossy_delivery(server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    user_id, token = add_user(engine, "dave")
    follow(engine, [user_id], manga_id)
    for number in range(10):
        web.post(f"{server.http_url}/notify/new-chapter",
                   json={"manga_id": manga_id, "title": "Lossy", "chapter": number})
    with NotificationClient(*server.udp_addr, "dave", token, drop_rate=0.3, seed=7) as client:
        client.register(timeout=0.5, attempts=20)
        for number in range(10, 20):
            web.post(f"{server.http_url}/notify/new-chapter",
                       json={"manga_id": manga_id, "title": "Lossy", "chapter": number})
        got = client.wait_for(20, 8)
        for _ in range(5):
            if len(got) == 20:
                break
            # A push whose every retry was lost stays unread until the next REGISTER.
            client.register(timeout=0.5, attempts=20)
            got = client.wait_for(20, 8)
        assert client.dropped > 0
        assert sorted(m["chapter"] for m in got) == sorted(str(n) for n in range(20))
        assert len({m["id"] for m in got}) == len(got) == 20
        # The server marks a notification read on its ACK, and ACKs are lost too: a reader
        # that left at once could leave one unread (it comes again at the next REGISTER).
        # This one stays, answering retransmissions, and registers again if the server has
        # given up retrying; each answer is a duplicate it does not show.
        def all_read() -> bool:
            client.poll(0.1)  # ACKs what the server sent again meanwhile
            return not _unread(engine, user_id)

        for _ in range(5):
            if _wait_until(all_read, 3):
                break
            client.register(timeout=0.5, attempts=20)
        assert len(client.received) == 20
    assert not _unread(engine, user_id)


def test_server_restart_mid_retransmission_loses_nothing(db_url: str, engine: Engine) -> None:
    manga_id = add_manga(engine)
    user_id, token = add_user(engine, "erin")
    follow(engine, [user_id], manga_id)
    # Slow retransmission, and a client that drops everything: the server is mid-retry.
    options = fast_options(ack_timeout=0.5)
    with ServerHandle(server_settings(db_url), options) as first:
        deaf = NotificationClient(*first.udp_addr, "erin", token)
        deaf.register()
        deaf.drop_rate = 1.0
        posted = [web.post(f"{first.http_url}/notify/new-chapter", json={
            "manga_id": manga_id, "title": "Restart", "chapter": n}).json()["notification_ids"][0]
            for n in range(5)]
        assert _wait_until(lambda: first.call(
            lambda s: s.udp is not None and sum(
                x.attempts for sess in s.udp.sessions.values()
                for x in sess.inflight.values()) > 0))
        deaf.close()
    assert sorted(_unread(engine, user_id)) == posted  # SIGTERM-like stop kept them unread
    with ServerHandle(server_settings(db_url), options) as second, \
            NotificationClient(*second.udp_addr, "erin", token) as client:
        assert client.register()["unread"] == 5
        assert [m["id"] for m in client.wait_for(5, 5)] == posted
    assert _wait_until(lambda: not _unread(engine, user_id))


def test_listen_style_client_reregisters_after_restart(db_url: str, engine: Engine) -> None:
    manga_id = add_manga(engine)
    user_id, token = add_user(engine, "fay")
    first = ServerHandle(server_settings(db_url), fast_options()).start()
    port = first.udp_addr[1]
    client = NotificationClient("127.0.0.1", port, "fay", token)
    client.register()
    first.stop()
    settings = server_settings(db_url, udp_port=port)
    with ServerHandle(settings, fast_options()) as second, client:
        deadline = time.monotonic() + 5  # PING -> SESSION_UNKNOWN -> REGISTER again
        while client.registrations < 2 and time.monotonic() < deadline:
            client.poll(0.2)
        assert client.registrations == 2
        web.post(f"{second.http_url}/notify/new-manga",
                   json={"manga_id": manga_id, "title": "After restart"})
        assert [m["title"] for m in client.wait_for(1, 5)] == ["After restart"]
    assert _unread(engine, user_id) == []


def test_several_devices_each_get_the_push_and_one_ack_is_enough(
        server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    user_id, token = add_user(engine, "gus")
    with NotificationClient(*server.udp_addr, "gus", token) as phone, \
            NotificationClient(*server.udp_addr, "gus", token) as laptop:
        phone.register()
        laptop.register()
        r = web.post(f"{server.http_url}/notify/new-manga",
                       json={"manga_id": manga_id, "title": "Two devices"})
        assert r.json()["online"] == 1
        assert phone.wait_for(1, 5)[0]["id"] == laptop.wait_for(1, 5)[0]["id"]
    assert _wait_until(lambda: not _unread(engine, user_id))


def test_send_budget_paces_a_burst(db_url: str, engine: Engine) -> None:
    manga_id = add_manga(engine)
    user_id, token = add_user(engine, "hal")
    follow(engine, [user_id], manga_id)
    options = fast_options(send_budget=3, budget_window=1.0)
    with ServerHandle(server_settings(db_url), options) as server:
        for n in range(8):
            web.post(f"{server.http_url}/notify/new-chapter",
                       json={"manga_id": manga_id, "title": "Flood", "chapter": n})
        with NotificationClient(*server.udp_addr, "hal", token) as client:
            client.register()
            # A busy machine may take a while for the first three; the next three wait out
            # the 1 s window after them, so three is all there is when they have come.
            assert len(client.wait_for(3, 5)) == 3  # the budget, the rest stays unread for now
            # The three ACKs may still be on their way to the database; the five held back
            # are unread whatever the timing.
            assert len(_unread(engine, user_id)) >= 5
            got = client.wait_for(8, 5)
            assert [m["chapter"] for m in got] == [str(n) for n in range(8)]



def test_a_live_session_gets_again_what_its_retries_missed(db_url: str, engine: Engine) -> None:
    """Never stranded: a client that keeps PINGing through 30% loss, and never REGISTERs
    again, receives all 21 notifications, even those whose every retry was lost."""
    manga_id = add_manga(engine)
    user_id, token = add_user(engine, "ivy")
    follow(engine, [user_id], manga_id)
    options = fast_options(heartbeat=4.0, ack_timeout=0.1, max_retransmit=2)
    with ServerHandle(server_settings(db_url), options) as server, \
            NotificationClient(*server.udp_addr, "ivy", token, seed=11) as client:
        client.register()
        client.drop_rate = 1.0  # every push and every retry is lost, for now
        for number in range(21):
            web.post(f"{server.http_url}/notify/new-chapter",
                       json={"manga_id": manga_id, "title": "Stranded", "chapter": number})

        def given_up() -> int:
            return server.call(lambda s: int(s.udp.metrics.given_up._value.get())
                               if s.udp else 0)

        deadline = time.monotonic() + 20
        while given_up() < 21 and time.monotonic() < deadline:
            client.poll(0.1)  # PINGs keep the session alive; nothing comes through
        assert given_up() >= 21
        assert client.received == []
        client.drop_rate = 0.3
        got = client.wait_for(21, 90)
        assert sorted(m["chapter"] for m in got) == sorted(str(n) for n in range(21))
        assert client.registrations == 1  # no new REGISTER was needed
    assert _wait_until(lambda: not _unread(engine, user_id), 10)


def test_the_garbage_collector_runs_again_once_a_broadcast_is_sent(
        db_url: str, engine: Engine) -> None:
    """A burst of pushes holds off cyclic collection (its in-flight records would set off
    full collections mid-burst); once the pushes are out it must be back, or the server
    would grow without bound.

    The collector is the whole process's, this test's thread included. Readers with nothing
    unread must not hold it (their catch-up pushes nothing): the check before the broadcast
    read it from this thread while the server was catching them up, and once found it off.
    (A heartbeat of 30 s: on a loaded machine the readers, who do not PING here, must not
    expire between their REGISTER and the broadcast.)"""
    manga_id = add_manga(engine, "Burst")
    users = [add_user(engine, f"reader{n}") for n in range(3)]
    with ServerHandle(server_settings(db_url), fast_options(heartbeat=30.0)) as server:
        clients = [NotificationClient(*server.udp_addr, f"reader{n}", token)
                   for n, (_, token) in enumerate(users)]

        def holds() -> int:
            return server.call(lambda s: s.udp.pushes.gc_pause.holds if s.udp else -1)

        try:
            for client in clients:
                client.register()
            assert gc.isenabled()
            assert holds() == 0
            r = web.post(f"{server.http_url}/notify/new-manga",
                           json={"manga_id": manga_id, "title": "Burst"})
            assert r.json()["online"] == 3
            assert all(len(client.wait_for(1, 5)) == 1 for client in clients)
            assert holds() >= 1  # the broadcast did hold it off
            assert _wait_until(lambda: server.call(
                lambda s: gc.isenabled() and s.udp is not None
                and not s.udp.pushes.gc_pause.held))
        finally:
            for client in clients:
                client.close()


def test_through_30_percent_loss_each_way_every_notification_arrives_within_45_s_once(
        db_url: str, engine: Engine) -> None:
    """The reported case at a fifth of its timings (PINGs every 2 s instead of every 10, a
    first ACK timeout of 0.4 s instead of 2): 21 notifications through 30% loss in each
    direction, after 1.5 s in which every push was lost, so that their retransmissions have
    backed off: the client's next PINGs bring them, each shown once, within 9 s of the
    trigger instead of 45."""
    manga_id = add_manga(engine)
    user_id, token = add_user(engine, "lossy")
    follow(engine, [user_id], manga_id)
    options = fast_options(heartbeat=6.0, ack_timeout=0.4)  # the client PINGs every 2 s
    shown: dict[str, float] = {}
    with ServerHandle(server_settings(db_url), options) as server, \
            NotificationClient(*server.udp_addr, "lossy", token, seed=5) as client:
        client.register()
        client.drop_rate, client.send_drop_rate = 1.0, 0.3

        def show(msg: dict) -> None:
            shown[msg["chapter"]] = time.monotonic() - posted

        posted = time.monotonic()
        r = web.post(f"{server.http_url}/notify/batch", json={"triggers": [
            {"kind": "new-chapter", "manga_id": manga_id, "title": "Lossy", "chapter": n}
            for n in range(21)]})
        assert r.json()["counts"] == {"accepted": 21}
        client.poll(1.5 - (time.monotonic() - posted), show)
        assert shown == {}
        client.drop_rate = 0.3
        while len(shown) < 21 and time.monotonic() - posted < 9.0:
            client.poll(0.05, show)
        assert sorted(shown, key=float) == [str(n) for n in range(21)]
        assert max(shown.values()) <= 9.0
        assert len(client.received) == 21 and client.registrations == 1
        client.drop_rate = client.send_drop_rate = 0.0  # ACKs lost so far get through now
        deadline = time.monotonic() + 10
        while _unread(engine, user_id) and time.monotonic() < deadline:
            client.poll(0.5)
        assert not _unread(engine, user_id)
