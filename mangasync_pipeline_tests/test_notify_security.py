"""Refusals over real UDP: forged, replayed or misdirected datagrams change nothing."""

from __future__ import annotations

import contextlib
import math
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from mangasync_pipeline.config import utcnow
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.client import AuthFailed, NotificationClient
from mangasync_pipeline.notify.testing import (
    add_manga,
    fast_options,
    fetch_cookie,
    follow,
    server_settings,
)
from mangasync_pipeline.notify.users import add_user
from mangasync_pipeline_tests import web


@pytest.fixture
def server(db_url: str) -> Iterator[ServerHandle]:
    options = fast_options(ack_timeout=5.0, error_interval=0.05)  # no retries in these tests
    with ServerHandle(server_settings(db_url), options) as handle:
        yield handle


def _raw(server: ServerHandle) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(server.udp_addr)
    sock.settimeout(0.5)
    return sock


def _answer(sock: socket.socket, timeout: float = 3.0) -> dict | None:
    """The next datagram; the default wait is generous because answers may need the DB."""
    sock.settimeout(timeout)
    try:
        return protocol.decode(sock.recv(2000))
    except TimeoutError:
        return None


def _sessions(server: ServerHandle) -> int:
    return server.call(lambda s: len(s.udp.sessions) if s.udp else 0)


def _read_flags(engine: Engine) -> dict[int, bool]:
    n = t.notifications
    with engine.connect() as conn:
        return {int(i): bool(r) for i, r in conn.execute(select(n.c.id, n.c.read))}


def test_bad_registers_are_refused_alike_and_create_no_session(
        server: ServerHandle, engine: Engine) -> None:
    _, token = add_user(engine, "alice")
    sock = _raw(server)
    cookie = fetch_cookie(sock)
    good = protocol.register_message("alice", token, cookie=cookie)
    sock.send(protocol.encode(good))
    registered = _answer(sock)
    assert registered is not None and registered["type"] == "REGISTERED"
    before = _sessions(server)
    attempts = {
        "replayed": good,
        "wrong signature": {**good, "nonce": "another-nonce-1", "sig": "0" * 64},
        "stale timestamp": protocol.register_message("alice", token, ts=int(time.time()) - 120,
                                                     cookie=cookie),
        "future timestamp": protocol.register_message("alice", token, ts=int(time.time()) + 90,
                                                      cookie=cookie),
        "unknown user": protocol.register_message("mallory", token, cookie=cookie),
        "wrong token": protocol.register_message("alice", "not-the-token", cookie=cookie),
    }
    for why, msg in attempts.items():
        time.sleep(0.06)  # one ERROR per address per error_interval
        sock.send(protocol.encode(msg))
        answer = _answer(sock)
        assert answer == {"type": "ERROR", "code": "AUTH_FAILED"}, why
    assert _sessions(server) == before


def test_ack_ping_unregister_from_another_address_are_ignored(
        server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    _, token = add_user(engine, "bob")
    with NotificationClient(*server.udp_addr, "bob", token) as bob:
        bob.register()
        bob.drop_rate = 1.0  # bob never sees (so never ACKs) the push
        web.post(f"{server.http_url}/notify/new-manga", json={"manga_id": manga_id,
                                                                "title": "Mine"})
        time.sleep(0.2)
        [nid] = _read_flags(engine)
        thief = _raw(server)
        for msg in ({"type": "ACK", "session": bob.session, "ids": [nid]},
                    {"type": "PING", "session": bob.session},
                    {"type": "UNREGISTER", "session": bob.session}):
            time.sleep(0.06)
            thief.send(protocol.encode(msg))
            answer = _answer(thief)
            assert answer is not None and answer.get("code") == "SESSION_UNKNOWN"
        assert _read_flags(engine) == {nid: False}
        assert _sessions(server) == 1
        bob.drop_rate = 0.0
        bob.ping()  # the session still answers its own address
        deadline = time.monotonic() + 3
        kinds: list[str] = []
        while "PONG" not in kinds and time.monotonic() < deadline:
            message = bob.recv(0.3)
            if message is not None:
                kinds.append(message["type"])
        assert "PONG" in kinds


def test_ack_of_another_users_ids_changes_nothing(server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    _, carol_token = add_user(engine, "carol")
    _, dan_token = add_user(engine, "dan")
    web.post(f"{server.http_url}/notify/new-manga", json={"manga_id": manga_id, "title": "T"})
    flags = _read_flags(engine)
    with NotificationClient(*server.udp_addr, "dan", dan_token) as dan:
        dan.register()
        dan_ids = {m["id"] for m in dan.wait_for(1, 3)}
        carol_ids = set(flags) - dan_ids
        dan.send({"type": "ACK", "session": dan.session, "ids": sorted(carol_ids)})
        # ACKs are written in batches: wait for dan's own (sent before the forged one).
        deadline = time.monotonic() + 5
        while not all(_read_flags(engine)[i] for i in dan_ids) and time.monotonic() < deadline:
            dan.poll(0.1)
        dan.poll(0.5)  # and a batch more for the forged one, were it accepted
    after = _read_flags(engine)
    assert all(after[i] is False for i in carol_ids)
    assert all(after[i] is True for i in dan_ids)
    del carol_token


def test_nothing_but_short_errors_to_unknown_addresses(server: ServerHandle) -> None:
    sock = _raw(server)
    sock.send(b"{}")  # shorter than any ERROR: no answer at all
    assert _answer(sock, 0.3) is None
    sock.send(b'{"type": "PING", "session": "nope-nope-nope-nope-nope"}')
    answer = _answer(sock)
    assert answer is not None and answer["type"] == "ERROR"
    time.sleep(0.06)
    # A burst gets at most one ERROR per interval.
    cause = b'{"type":"WHAT","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'
    started = time.monotonic()
    for _ in range(20):
        sock.send(cause)
    answers = []
    while (a := _answer(sock, 0.3)) is not None:
        answers.append(a)
    # At most one per 0.05 s interval, however slowly the machine worked through the burst.
    assert 1 <= len(answers) <= 1 + (time.monotonic() - started) / 0.05
    assert len(answers) < 20
    for a in answers:
        assert len(protocol.encode(a)) <= len(cause)


def _socket_from(source: str, server: ServerHandle) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.connect(server.udp_addr)
    return sock


def test_guesses_from_rotating_ports_stay_under_the_backoff_limit(
        db_url: str, engine: Engine) -> None:
    """Failures count per (source IP, user), whatever the port, and each one past the limit
    doubles the time that pair is ignored; the same user from another address is not."""
    _, token = add_user(engine, "eve")
    limit, base = 3, 0.2
    options = fast_options(failed_register_limit=limit, backoff_base=base, error_interval=0.0,
                           source_refusal_limit=10_000)
    with ServerHandle(server_settings(db_url), options) as server:

        def checked() -> int:  # REGISTERs whose signature the server checked and refused
            return server.call(lambda s: int(s.udp.metrics.registers.labels("auth_failed")
                                             ._value.get()) if s.udp else -1)

        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 3.0:
            with _socket_from("127.0.0.2", server) as sock:  # a new port for every guess
                sock.send(protocol.encode(protocol.register_message(
                    "eve", f"guess-{sent}", cookie=fetch_cookie(sock))))
                sent += 1
            time.sleep(0.002)
        elapsed = time.monotonic() - started
        # While the guesses go on, even the right token from that IP is ignored (sent while
        # the pair is blocked for a while yet: a guess each moment it is not).
        user_id = server.call(lambda s: s.udp.directory.readers["eve"].id)

        def blocked_for() -> float:
            def left(s: Any) -> float:
                record = s.udp.failed_pairs.records.get(("127.0.0.2", user_id))
                return record.blocked_until - time.monotonic() if record else 0.0
            return server.call(left)

        deadline = time.monotonic() + 10
        while blocked_for() < 1.0:
            assert time.monotonic() < deadline, "the pair is never blocked"
            with _socket_from("127.0.0.2", server) as sock:
                sock.send(protocol.encode(protocol.register_message(
                    "eve", "one-more-guess", cookie=fetch_cookie(sock))))
            time.sleep(0.05)
        with _socket_from("127.0.0.2", server) as sock:
            sock.send(protocol.encode(protocol.register_message("eve", token,
                                                                cookie=fetch_cookie(sock))))
            assert _answer(sock, 0.3) is None
        deadline = time.monotonic() + 5  # refusals wait for at most one re-read of eve
        while server.call(lambda s: s.udp._pending_registers if s.udp else 0) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        # Past the limit, one guess per backoff period: base, 2 base, 4 base, ...
        periods = math.ceil(math.log2(elapsed / base + 1))
        assert sent > 100
        assert limit <= checked() <= limit + periods + 1
        # Another IP registers meanwhile.
        with NotificationClient(*server.udp_addr, "eve", token, source="127.0.0.3") as other:
            assert other.register()["type"] == "REGISTERED"


def test_ten_thousand_random_datagrams_do_not_stop_service(
        server: ServerHandle, engine: Engine) -> None:
    manga_id = add_manga(engine)
    _, token = add_user(engine, "fred")
    rng = random.Random(1234)
    templates = [b'{"type":"REGISTER","user":"fred","ts":1,"nonce":"x","sig":"y"}',
                 b'{"type":"ACK","session":"s","ids":[1,2,"x"]}', b'{"type":"PING"}',
                 b'{"type":"ACK","session":null,"ids":' + b"[1," * 300 + b"]}", b"[1,2,3]",
                 b'{"type":"NEW_MANGA","id":1}', b"\xff\xfe", b"", b"{" * 1000]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    for i in range(10_000):
        kind = rng.random()
        if kind < 0.4:
            data = rng.randbytes(rng.randint(0, 1500))
        elif kind < 0.8:
            base = rng.choice(templates)
            data = base[: rng.randint(0, len(base))]  # truncated JSON
        else:
            data = rng.choice(templates)
        socks[i % len(socks)].sendto(data, server.udp_addr)
    for s in socks:
        s.close()
    with NotificationClient(*server.udp_addr, "fred", token) as client:
        client.register()
        r = web.post(f"{server.http_url}/notify/new-manga",
                       json={"manga_id": manga_id, "title": "Still here"})
        assert r.status_code == 202
        assert client.wait_for(1, 5)[0]["title"] == "Still here"


def _unread(engine: Engine, user_id: int) -> int:
    n = t.notifications
    with engine.connect() as conn:
        return len(conn.execute(select(n.c.id).where(n.c.user_id == user_id,
                                                     n.c.read.is_(False))).all())


def _with_unread(engine: Engine, count: int) -> tuple[int, str]:
    """The victim: a user with `count` unread notifications."""
    manga_id = add_manga(engine)
    user_id, token = add_user(engine, "victim")
    follow(engine, [user_id], manga_id)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(t.notifications), [
            {"user_id": user_id, "type": "NEW_CHAPTER", "manga_id": manga_id,
             "chapter": str(i), "title": "Backlog", "message": f"Chapter {i}", "read": False,
             "created_at": now} for i in range(count)])
    return user_id, token


def _register_at(sock: socket.socket, server: ServerHandle, token: str) -> bytes:
    """The victim registers at `server` from `sock`; the datagram, as an eavesdropper saw it."""
    sock.connect(server.udp_addr)
    datagram = protocol.encode(protocol.register_message("victim", token,
                                                         cookie=fetch_cookie(sock)))
    sock.send(datagram)
    answer = _answer(sock)
    assert answer is not None and answer["type"] == "REGISTERED"
    return datagram


def test_a_captured_register_is_refused_after_a_restart_and_by_another_server(
        db_url: str, engine: Engine) -> None:
    user_id, token = _with_unread(engine, 10)
    options = fast_options(ack_timeout=5.0)
    # The victim's socket keeps its address and port throughout, so its cookie stays valid:
    # what refuses the copies below is the used nonce, or the signed cookie.
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    with victim:
        with ServerHandle(server_settings(db_url), options) as first:
            captured = _register_at(victim, first, token)
        # After a restart: the same datagram from the same address and port.
        with ServerHandle(server_settings(db_url), options) as second:
            victim.connect(second.udp_addr)
            victim.send(captured)
            assert _answer(victim) == {"type": "ERROR", "code": "AUTH_FAILED"}
            # From another address, with that address's own cookie: the signature says no.
            with _socket_from("127.0.0.2", second) as attacker:
                attacker.send(protocol.encode({**(protocol.decode(captured) or {}),
                                               "cookie": fetch_cookie(attacker)}))
                assert _answer(attacker) == {"type": "ERROR", "code": "AUTH_FAILED"}
            assert _sessions(second) == 0
        # Two servers on the same database: what one accepted, the other refuses.
        with ServerHandle(server_settings(db_url), options) as a, \
                ServerHandle(server_settings(db_url), options) as b:
            fresh = _register_at(victim, a, token)
            victim.connect(b.udp_addr)
            victim.send(fresh)
            assert _answer(victim) == {"type": "ERROR", "code": "AUTH_FAILED"}
            victim.send(protocol.encode({"type": "ACK", "session": "x", "ids": [1]}))
            assert _sessions(b) == 0
    assert _unread(engine, user_id) == 10  # nobody acknowledged the victim's backlog


def test_used_nonces_are_purged_once_their_window_has_passed(db_url: str,
                                                             engine: Engine) -> None:
    _, token = add_user(engine, "nina")
    options = fast_options(register_window=1.0, nonce_ttl=2.0, users_refresh=0.2)

    def nonces() -> int:
        with engine.connect() as conn:
            return len(conn.execute(select(t.register_nonces.c.nonce)).all())

    with ServerHandle(server_settings(db_url), options) as server, \
            NotificationClient(*server.udp_addr, "nina", token) as client:
        client.register()
        assert nonces() == 1
        deadline = time.monotonic() + 10
        while nonces() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert nonces() == 0


def test_a_spoofed_register_gets_the_victim_one_shorter_datagram_and_opens_nothing(
        db_url: str, engine: Engine) -> None:
    """A REGISTER signed with the attacker's own token but carrying the victim's source
    address: the victim, who never answers, gets one RETRY shorter than the REGISTER, and no
    session is opened (the attacker cannot see the cookie)."""
    user_id, token = _with_unread(engine, 10)  # the attacker's own account and backlog
    with ServerHandle(server_settings(db_url), fast_options(ack_timeout=0.2)) as server, \
            _socket_from("127.0.0.2", server) as victim:
        register = protocol.encode(protocol.register_message("victim", token,
                                                             cookie="a" + "A" * 20))
        victim.send(register)  # as if from the victim: the victim's socket never answers
        received: list[bytes] = []
        victim.settimeout(0.2)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                received.append(victim.recv(2000))
        assert _sessions(server) == 0
        kinds = [protocol.decode(d)["type"] for d in received]  # type: ignore[index]
        assert kinds == ["RETRY"]
        assert len(received[0]) < len(register)
    assert _unread(engine, user_id) == 10


def test_a_legitimate_register_completes_during_a_flood_from_another_address(
        db_url: str, engine: Engine) -> None:
    _, victim_token = add_user(engine, "victim")
    _, newcomer_token = add_user(engine, "newcomer")
    with ServerHandle(server_settings(db_url), fast_options()) as server:
        with NotificationClient(*server.udp_addr, "victim", victim_token,
                                source="127.0.0.3") as device:
            device.register()  # the victim has registered from this address before
        stop = threading.Event()
        flooded = [0]

        def flood() -> None:
            socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
            for s in socks:
                s.bind(("127.0.0.2", 0))
            began = time.monotonic()
            while not stop.is_set():
                for i, s in enumerate(socks):
                    name = "victim" if i % 2 else f"nobody{flooded[0]}"
                    s.sendto(protocol.encode(protocol.register_message(name, "guess")),
                             server.udp_addr)
                    flooded[0] += 1
                # The reported attack's rate: 12,000 REGISTERs a second.
                time.sleep(max(0.0, flooded[0] / 12_000 - (time.monotonic() - began)))
            for s in socks:
                s.close()

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        try:
            # The flood is well under way first (on a busy runner its thread starts slowly).
            deadline = time.monotonic() + 30
            while flooded[0] <= 1000 and time.monotonic() < deadline:
                time.sleep(0.05)
            for user, tok in (("victim", victim_token), ("newcomer", newcomer_token)):
                with NotificationClient(*server.udp_addr, user, tok,
                                        source="127.0.0.3") as client:
                    assert client.register(timeout=2.0, attempts=1)["type"] == "REGISTERED"
        finally:
            stop.set()
            flooder.join(10)
        assert flooded[0] > 1000


def test_no_reader_token_is_stored_in_any_table(db_url: str, engine: Engine) -> None:
    from mangasync_pipeline.notify.testing import add_users
    from mangasync_pipeline.notify.users import rotate_token

    tokens = [add_user(engine, "tina")[1], rotate_token(engine, "tina")[1]]
    tokens += [tok for _, _, tok in add_users(engine, 5)]
    with ServerHandle(server_settings(db_url), fast_options()) as server, \
            NotificationClient(*server.udp_addr, "tina", tokens[1]) as client:
        client.register()
    stored: list[str] = []
    with engine.connect() as conn:
        for table in t.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                stored += [str(v) for v in row]
    dump = "\n".join(stored)
    assert "tina" in dump  # the dump does contain the users
    for token in tokens:
        for i in range(len(token) - 15):
            assert token[i:i + 16] not in dump


def test_upgrading_drops_plain_text_tokens_and_says_what_to_do(
        db_url: str, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    from alembic import command
    from click.testing import CliRunner
    from sqlalchemy import inspect, text

    from mangasync_pipeline.cli import cli
    from mangasync_pipeline.db.migrate import alembic_config

    with engine.begin() as conn:  # back to the schema that stored tokens as printed
        cfg = alembic_config(db_url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (username, token, created_at) "
                          "VALUES ('olga', 'plain-text-secret-token-of-olga', :now)"),
                     {"now": utcnow()})
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    assert "token" not in {c["name"] for c in inspect(engine).get_columns("users")}
    listed = CliRunner().invoke(cli, ["users", "list"], env={"DATABASE_URL": db_url})
    assert "no token: mangasync users rotate-token olga" in listed.stdout
    with caplog.at_level("WARNING", logger="mangasync.notify.directory"), \
            ServerHandle(server_settings(db_url), fast_options()) as server:
        with NotificationClient(*server.udp_addr, "olga", "plain-text-secret-token-of-olga"
                                ) as old, pytest.raises(AuthFailed):
            old.register(timeout=3, attempts=1)
        warnings = [r.getMessage() for r in caplog.records if "rotate-token" in r.getMessage()]
        assert len(warnings) == 1 and "olga" in warnings[0]
        rotated = CliRunner().invoke(cli, ["users", "rotate-token", "olga"],
                                     env={"DATABASE_URL": db_url}).stdout.strip()
        with NotificationClient(*server.udp_addr, "olga", rotated, source="127.0.0.3") as new:
            assert new.register()["type"] == "REGISTERED"


def test_register_does_not_wait_for_the_triggers_database_threads(
        db_url: str, engine: Engine) -> None:
    user_id, token = _with_unread(engine, 3)
    release = threading.Event()
    with ServerHandle(server_settings(db_url), fast_options()) as server:
        # Every database thread of the triggers is busy (a slow database, a burst of triggers).
        server.call(lambda s: [s._executor.submit(release.wait, 30)
                               for _ in range(s.options.db_threads)])
        try:
            with NotificationClient(*server.udp_addr, "victim", token) as client:
                assert client.register(timeout=2.0, attempts=1)["unread"] == 3
                assert len(client.wait_for(3, 5)) == 3  # the catch-up does not wait either
        finally:
            release.set()
