"""What an ACK cancels (notify/ack_batch.py): every device's push of that id, and only the
user's own; ids this process pushed are told apart from the rest."""

from __future__ import annotations

from mangasync_pipeline.notify.ack_batch import cancel_acked, cancel_remote
from mangasync_pipeline.notify.sessions import Inflight, Session, UserState


def _session(user_id: int, port: int, *ids: int) -> Session:
    session = Session(f"s{user_id}-{port}", user_id, f"u{user_id}", ("127.0.0.2", port), 0.0)
    for nid in ids:
        session.inflight[nid] = Inflight(nid, b"x", 2.0, 0.0)
        session.seen.add(nid)
    return session


def test_an_ack_on_one_device_cancels_the_push_on_every_device_of_the_user() -> None:
    phone, laptop = _session(1, 1, 5, 6), _session(1, 2, 5)
    laptop.stranded[6] = b"x"
    assert cancel_acked([phone, laptop], [5, 6, 99]) == [(5, True), (6, True), (99, False)]
    assert phone.inflight == {} and laptop.inflight == {} and laptop.stranded == {}


def test_an_ack_of_another_users_id_cancels_nothing_of_theirs() -> None:
    mine, theirs = _session(1, 1), _session(2, 2, 5)
    assert cancel_acked([mine], [5]) == [(5, False)]  # to be checked against my own rows
    assert list(theirs.inflight) == [5]


def test_acks_taken_by_another_process_cancel_the_pushes_here() -> None:
    alice, bob = _session(1, 1, 5, 6), _session(2, 2, 5)
    users = {1: UserState(1, 30, 0.5, 30, 0.0, {alice.id: alice}),
             2: UserState(2, 30, 0.5, 30, 0.0, {bob.id: bob})}
    cancel_remote(users, [(1, 5), (3, 5)])
    assert list(alice.inflight) == [6] and list(bob.inflight) == [5]
