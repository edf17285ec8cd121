"""Nobody locks out another reader or another address, and no source takes more than its share
(the reported attacks, over real UDP on loopback; 127.0.0.2 and up are other hosts)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.client import NotificationClient
from mangasync_pipeline.notify.testing import fast_options, fetch_cookie, server_settings
from mangasync_pipeline.notify.users import add_user
from mangasync_pipeline_tests import web


def _socket_from(source: str, server: ServerHandle) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.connect(server.udp_addr)
    return sock


def _metric(server: ServerHandle, name: str, label: str) -> int:
    def read(s: Any) -> int:
        return int(getattr(s.udp.metrics, name).labels(label)._value.get())
    return server.call(read)


def _drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(2000)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def test_guesses_at_a_reader_from_other_addresses_never_lock_the_reader_out(
        db_url: str, engine: Engine) -> None:
    _, token = add_user(engine, "alice")
    with ServerHandle(server_settings(db_url), fast_options(error_interval=0.0)) as server:
        for host in range(10, 20):  # ten attackers with real addresses, three guesses each
            with _socket_from(f"127.0.0.{host}", server) as sock:
                cookie = fetch_cookie(sock)
                for n in range(3):
                    sock.send(protocol.encode(protocol.register_message(
                        "alice", f"guess-{n}", cookie=cookie)))
                    time.sleep(0.01)
        deadline = time.monotonic() + 5  # refusals wait for at most one re-read of alice
        while server.call(lambda s: s.udp._pending_registers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _metric(server, "registers", "auth_failed") == 30
        with NotificationClient(*server.udp_addr, "alice", token, source="127.0.0.3") as alice:
            assert alice.register(timeout=2.0, attempts=1)["type"] == "REGISTERED"


def test_forged_registers_from_a_readers_address_cost_nothing_and_block_nobody(
        db_url: str, engine: Engine) -> None:
    """A spoofer cannot see the cookie sent to the address it forges: its REGISTERs are
    answered RETRY and counted against nobody, and cost no database lookup."""
    _, token = add_user(engine, "bob")
    with ServerHandle(server_settings(db_url), fast_options(error_interval=0.0)) as server:
        with _socket_from("127.0.0.3", server) as forger:  # bob's address, another port
            for n in range(60):
                name = "bob" if n % 2 else f"nobody{n}"
                forger.send(protocol.encode(protocol.register_message(
                    name, f"guess-{n}", cookie="a" + "A" * 20)))
            time.sleep(0.3)
        assert server.call(lambda s: (len(s.udp.failed_pairs.records),
                                      len(s.udp.refused_sources.records),
                                      len(s.udp.directory._absent))) == (0, 0, 0)
        assert _metric(server, "datagrams_rejected", "register_retry") == 60
        with NotificationClient(*server.udp_addr, "bob", token, source="127.0.0.3") as bob:
            assert bob.register(timeout=2.0, attempts=1)["type"] == "REGISTERED"


def _flood(server: ServerHandle, source: str, stop: threading.Event, sent: list[int],
           messages: Any, rate: float, sockets: int = 16) -> None:
    socks = [_socket_from(source, server) for _ in range(sockets)]
    cookies = [fetch_cookie(s) for s in socks]
    began = time.monotonic()
    while not stop.is_set():
        for s, cookie in zip(socks, cookies, strict=True):
            try:
                s.send(protocol.encode({**messages(sent[0]), "cookie": cookie}))
            except ConnectionRefusedError:  # the server has stopped
                stop.set()
            sent[0] += 1
        if sent[0] % 1024 < sockets:
            for s in socks:
                _drain(s)
        time.sleep(max(0.0, sent[0] / rate - (time.monotonic() - began)))
    for s in socks:
        s.close()


@pytest.fixture
def flooding() -> Iterator[Any]:
    threads: list[tuple[threading.Thread, threading.Event]] = []

    def start(*args: Any, **kwargs: Any) -> list[int]:
        stop, sent = threading.Event(), [0]
        thread = threading.Thread(target=_flood, args=(*args[:2], stop, sent, *args[2:]),
                                  kwargs=kwargs, daemon=True)
        thread.start()
        threads.append((thread, stop))
        return sent

    yield start
    for thread, stop in threads:
        stop.set()
        thread.join(10)


def test_a_flood_naming_another_reader_takes_no_more_than_its_share(
        db_url: str, engine: Engine, flooding: Any) -> None:
    _, token = add_user(engine, "victim")
    # A budget any flood exceeds, however busy the machine running the test.
    options = fast_options(register_budget=100.0, error_interval=0.0)
    with ServerHandle(server_settings(db_url), options) as server:
        sent = flooding(server, "127.0.0.2", lambda n: protocol.register_message(
            "victim" if n % 2 else f"nobody{n}", "guess"), 4000.0)
        time.sleep(0.5)
        answered = 0
        for _ in range(10):
            with NotificationClient(*server.udp_addr, "victim", token,
                                    source="127.0.0.3") as victim:
                victim.register(timeout=2.0, attempts=1)
                answered += 1
        assert answered == 10
        assert sent[0] > 1000
        # What the flooder was refused counts against it: most of its flood was refused by
        # the budget, and it carries a debt beyond its share while it keeps flooding.
        assert _metric(server, "datagrams_rejected", "register_budget") > sent[0] / 2
        assert server.call(lambda s: s.udp.register_budget.counts.get("127.0.0.2", 0)
                           >= s.udp.register_budget.share)


def test_one_account_registering_without_end_holds_at_most_the_session_cap(
        db_url: str, engine: Engine) -> None:
    _, hog_token = add_user(engine, "hog")
    _, token = add_user(engine, "reader")
    options = fast_options(max_sessions_per_user=16)
    with ServerHandle(server_settings(db_url), options) as server:
        socks = [_socket_from("127.0.0.2", server) for _ in range(48)]
        cookies = [fetch_cookie(s) for s in socks]
        for _ in range(20):
            for s, cookie in zip(socks, cookies, strict=True):
                s.send(protocol.encode(protocol.register_message("hog", hog_token,
                                                                 cookie=cookie)))
            for s in socks:
                _drain(s)
            time.sleep(0.01)
        started = time.monotonic()
        with NotificationClient(*server.udp_addr, "reader", token, source="127.0.0.3") as r:
            assert r.register(timeout=2.0, attempts=1)["type"] == "REGISTERED"
        assert time.monotonic() - started < 2.0
        assert web.get(f"{server.http_url}/health", timeout=2.0).status_code == 200
        time.sleep(0.3)
        hog_sessions = server.call(lambda s: [len(st.sessions) for st in s.udp.users.values()
                                              if any(x.username == "hog"
                                                     for x in st.sessions.values())])
        assert hog_sessions == [16]
        for s in socks:
            s.close()


def test_a_huge_number_in_a_register_is_an_ordinary_counted_refusal(
        db_url: str, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    add_user(engine, "alice")
    with caplog.at_level(logging.DEBUG - 1, logger="mangasync.notify.udp"), \
            ServerHandle(server_settings(db_url), fast_options()) as server, \
            _socket_from("127.0.0.2", server) as sock:
        caplog.set_level(logging.INFO, logger="mangasync.notify.udp")
        cookie = fetch_cookie(sock)
        for n in range(300):
            msg = {**protocol.register_message("alice", "x", cookie=cookie), "ts": 10**400}
            sock.send(protocol.encode(msg))
            if n % 50 == 0:
                _drain(sock)
        time.sleep(0.5)
        counted = (_metric(server, "registers", "bad_request")
                   + _metric(server, "datagrams_rejected", "register_limited"))
        assert counted == 300
        assert _metric(server, "datagrams_rejected", "server_error") == 0
    from_source = [r for r in caplog.records if "127.0.0.2" in r.getMessage()]
    # The server's own records: the garbage collector may finalize another test's leftover
    # connection in the server's thread, and that logs a traceback under sqlalchemy.
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("mangasync"))
    assert 1 <= len(from_source) <= 2  # the first, then (at most) one line with the count


def test_refusals_are_logged_once_per_source_per_minute_with_a_count() -> None:
    from mangasync_pipeline.notify.limits import RefusalLog

    lines: list[str] = []
    refusals = RefusalLog(lines.append, period=60.0)
    for second in range(300):  # five minutes, ten refusals a second from one source
        for _ in range(10):
            refusals.note("192.0.2.7", "REGISTER refused: malformed", float(second))
        refusals.note(f"198.51.100.{second % 3}", "REGISTER refused: bad signature",
                      float(second))
    refusals.flush(300.0)
    about = [line for line in lines if "192.0.2.7" in line]
    assert len(about) == 6  # the first as it happened, then one line a minute
    assert about[1].startswith("599 refusals") and about[2].startswith("600 refusals")
    assert len(lines) == 6 + 3 + 3 * 5  # the other three sources: the same rule


def test_the_budget_gives_a_newcomer_room_and_a_flooder_no_more_than_its_share() -> None:
    from mangasync_pipeline.notify.limits import FairBudget

    budget = FairBudget(1000.0)  # a second's capacity: 1,000
    took = {"flooder": 0, "reader": 0}
    for tick in range(3000):  # three seconds: the flooder asks 10 a ms, the reader 1 a 10 ms
        now = tick / 1000
        for _ in range(10):
            took["flooder"] += budget.take("flooder", now)
        if tick % 10 == 0:
            took["reader"] += budget.take("reader", now)
    assert took["reader"] == 300  # every one of its REGISTERs
    # The first second's share (half the budget, though it was alone), then nothing: what it
    # asked beyond its share is debt.
    assert took["flooder"] <= 500


def test_a_register_seen_on_the_wire_cannot_be_replayed_from_another_address(
        db_url: str, engine: Engine) -> None:
    """The cookie is inside the signature: an eavesdropper who copies alice's REGISTER and
    sends it from its own address, with its own valid cookie, gets no session."""
    _, token = add_user(engine, "alice")
    with ServerHandle(server_settings(db_url), fast_options(error_interval=0.0)) as server:
        with _socket_from("127.0.0.3", server) as alice_sock, \
                _socket_from("127.0.0.9", server) as eve:
            seen = protocol.register_message("alice", token, cookie=fetch_cookie(alice_sock))
            eve_cookie = fetch_cookie(eve)
            eve.send(protocol.encode({**seen, "cookie": eve_cookie}))  # the copy, re-cookied
            eve.settimeout(2.0)
            answer = protocol.decode(eve.recv(2000))
        assert answer is not None and answer["type"] == "ERROR"
        assert answer["code"] == "AUTH_FAILED"


def test_a_flooder_behind_a_readers_nat_address_does_not_block_the_reader(
        db_url: str, engine: Engine) -> None:
    """Readers behind one NAT share an IP: a source refused for flooding is that address and
    port, not every reader on the IP."""
    _, token = add_user(engine, "alice")
    with ServerHandle(server_settings(db_url), fast_options(error_interval=0.0)) as server:
        with _socket_from("127.0.0.5", server) as flooder:
            cookie = fetch_cookie(flooder)
            for _ in range(80):  # malformed REGISTERs, with a valid cookie: over the limit
                flooder.send(protocol.encode({"type": "REGISTER", "user": "x", "ts": "soon",
                                              "nonce": "n", "sig": "s", "cookie": cookie}))
            time.sleep(0.3)
            assert server.call(lambda s: s.udp.refused_sources.blocked(
                flooder.getsockname(), time.monotonic()))
        with NotificationClient(*server.udp_addr, "alice", token, source="127.0.0.5") as alice:
            assert alice.register(timeout=2.0, attempts=1)["type"] == "REGISTERED"


# --- IPv6: one subscriber holds a /64, 2^64 addresses ---------------------------------------

def test_an_ipv6_source_is_its_64_and_a_mapped_ipv4_client_its_address() -> None:
    from mangasync_pipeline.notify.limits import source_of

    one = {source_of(f"2001:db8:0:7:{n:x}::{n:x}") for n in range(1, 500)}
    assert one == {"2001:db8:0:7::/64"}
    assert source_of("2001:db8:0:8::1") == "2001:db8:0:8::/64"  # the next /64: someone else
    assert source_of("fe80::1%eth0") == "fe80::/64"
    assert source_of("::ffff:127.0.0.2") == "127.0.0.2"  # through a dual-stack socket
    assert source_of("64:ff9b::c000:207") == "192.0.2.7"  # through NAT64: not one /64 for all
    assert source_of("127.0.0.2") == "127.0.0.2"
    assert source_of("") == "" and source_of("not:an:address") == "not:an:address"


def test_refusals_from_one_ipv6_64_are_one_line_a_minute() -> None:
    from mangasync_pipeline.notify.limits import RefusalLog

    lines: list[str] = []
    refusals = RefusalLog(lines.append, period=60.0)
    for n in range(1, 5000):  # a new address for every datagram
        refusals.note(f"2001:db8:0:7::{n:x}", "datagram refused: not JSON", n / 100)
    refusals.flush(60.0)
    assert len(lines) == 2 and "2001:db8:0:7::/64" in lines[0]
    assert lines[1].startswith("4998 refusals from 2001:db8:0:7::/64")
