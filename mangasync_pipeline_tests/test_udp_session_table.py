"""The sessions a process holds (notify/session_table.py): opening, replacing, the per-user cap,
expiry and forgetting idle users."""

from __future__ import annotations

from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.session_table import SessionTable

OPT = ServerOptions(heartbeat=10.0, max_sessions_per_user=3, send_budget=30, budget_window=60.0)
PHONE = ("127.0.0.2", 5000)
LAPTOP = ("127.0.0.3", 5000)


def test_a_session_is_found_by_id_user_and_address_until_closed() -> None:
    table = SessionTable(OPT, 0.0)
    session = table.open(7, "alice", PHONE, 90, 1.0)
    assert table.sessions == {session.id: session}
    assert table.users[7].sessions == {session.id: session}
    assert table.has_session(PHONE) and not table.has_session(LAPTOP)
    assert table.online_user_ids() == {7}
    assert session.bytes_in == 90 and not session.validated
    table.close(session, "unregistered")
    assert session.closed and table.sessions == {} and table.online_user_ids() == set()
    assert not table.has_session(PHONE)
    table.close(session, "again")  # closing twice counts once
    assert table.ended == 1


def test_a_new_register_from_the_same_address_replaces_the_session() -> None:
    table = SessionTable(OPT, 0.0)
    first = table.open(7, "alice", PHONE, 90, 1.0)
    laptop = table.open(7, "alice", LAPTOP, 90, 1.0)
    second = table.open(7, "alice", PHONE, 90, 2.0)
    assert first.closed and not laptop.closed
    assert set(table.users[7].sessions) == {laptop.id, second.id}
    assert table.addr_sessions == {PHONE: 1, LAPTOP: 1}


def test_a_device_beyond_the_cap_ends_the_users_oldest_session_only() -> None:
    table = SessionTable(OPT, 0.0)
    other = table.open(8, "bob", ("127.0.0.9", 1), 90, 0.0)
    sessions = [table.open(7, "alice", ("127.0.0.2", port), 90, float(port))
                for port in range(1, 5)]
    assert [s.closed for s in sessions] == [True, False, False, False]
    assert len(table.users[7].sessions) == OPT.max_sessions_per_user
    assert not other.closed


def test_two_sessions_behind_one_address_share_its_count() -> None:
    table = SessionTable(OPT, 0.0)
    alice = table.open(7, "alice", PHONE, 90, 0.0)
    bob = table.open(8, "bob", PHONE, 90, 0.0)
    table.close(alice, "unregistered")
    assert table.has_session(PHONE)
    table.close(bob, "unregistered")
    assert not table.has_session(PHONE)


def test_sessions_silent_for_three_heartbeats_expire() -> None:
    table = SessionTable(OPT, 0.0)
    quiet = table.open(7, "alice", PHONE, 90, 0.0)
    talking = table.open(8, "bob", LAPTOP, 90, 0.0)
    talking.last_seen = 25.0
    table.expire(30.0)
    assert not quiet.closed  # exactly three heartbeats: not yet
    table.expire(30.1)
    assert quiet.closed and not talking.closed


def test_an_idle_user_is_forgotten_only_once_the_budget_has_recovered() -> None:
    table = SessionTable(OPT, 0.0)
    session = table.open(7, "alice", PHONE, 90, 0.0)
    state = table.users[7]
    for nid in range(1, 31):
        assert state.charge(nid, 0.0)
    table.close(session, "unregistered")
    table.sweep_users(30.0)  # half the budget back
    assert 7 in table.users
    table.sweep_users(60.0)
    assert 7 not in table.users


def test_the_summary_line_counts_since_the_last_one(caplog) -> None:  # type: ignore[no-untyped-def]
    table = SessionTable(OPT, 0.0)
    table.open(7, "alice", PHONE, 90, 0.0)
    with caplog.at_level("INFO", logger="mangasync.notify.udp"):
        table.report(59.0)
        table.report(60.0)
        table.report(130.0)  # nothing opened or ended since
    assert [r.getMessage() for r in caplog.records] == [
        "sessions: 1 open; 1 opened and 0 ended since the last report"]
