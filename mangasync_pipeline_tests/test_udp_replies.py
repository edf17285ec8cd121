"""ERROR and RETRY answers: paced per address, never longer than their cause (notify/replies.py)."""

from __future__ import annotations

from mangasync_pipeline.notify import protocol
from mangasync_pipeline.notify.replies import RETRY_INTERVAL, ErrorReplies, RetryReplies

A = ("127.0.0.2", 4000)
B = ("127.0.0.2", 4001)


def test_an_error_carries_its_message_when_the_cause_is_long_enough() -> None:
    errors = ErrorReplies(interval=1.0)
    data = errors.reply(A, "BAD_REQUEST", 500, "unknown type", now=10.0)
    assert data is not None
    assert protocol.decode(data) == {"type": "ERROR", "code": "BAD_REQUEST",
                                     "message": "unknown type"}


def test_an_error_drops_its_message_then_itself_rather_than_outgrow_its_cause() -> None:
    errors = ErrorReplies(interval=1.0)
    bare = len(protocol.encode(protocol.error_message("BAD_REQUEST")))
    data = errors.reply(A, "BAD_REQUEST", bare, "a message that would not fit", now=10.0)
    assert data is not None and protocol.decode(data) == {"type": "ERROR", "code": "BAD_REQUEST"}
    assert errors.reply(B, "BAD_REQUEST", bare - 1, None, now=10.0) is None
    # Nothing was sent to B, so B is not paced either.
    assert errors.reply(B, "BAD_REQUEST", bare, None, now=10.0) is not None


def test_an_address_gets_one_error_per_interval_and_others_are_not_held_up() -> None:
    errors = ErrorReplies(interval=1.0)
    assert errors.reply(A, "SESSION_UNKNOWN", 200, None, now=10.0) is not None
    assert errors.reply(A, "SESSION_UNKNOWN", 200, None, now=10.9) is None
    assert errors.reply(B, "SESSION_UNKNOWN", 200, None, now=10.9) is not None
    assert errors.reply(A, "SESSION_UNKNOWN", 200, None, now=11.0) is not None


def test_the_sweep_forgets_addresses_whose_interval_is_over() -> None:
    errors = ErrorReplies(interval=1.0)
    errors.reply(A, "X", 200, None, now=10.0)
    errors.reply(B, "X", 200, None, now=10.5)
    errors.sweep(11.2)
    assert set(errors.last) == {B}


def test_a_retry_carries_a_cookie_the_address_can_register_with() -> None:
    cookies = protocol.RegisterCookies(b"k" * 32)
    retries = RetryReplies(cookies)
    data = retries.reply(A, 500, now=1.0)
    assert data is not None and len(data) == retries.size
    msg = protocol.decode(data)
    assert msg is not None and msg["type"] == "RETRY"
    assert cookies.valid(msg["cookie"], A) and not cookies.valid(msg["cookie"], B)


def test_a_register_shorter_than_a_retry_gets_none() -> None:
    retries = RetryReplies(protocol.RegisterCookies(b"k" * 32))
    assert retries.reply(A, retries.size - 1, now=1.0) is None
    assert retries.reply(A, retries.size, now=1.0) is not None


def test_an_address_gets_one_retry_per_interval() -> None:
    retries = RetryReplies(protocol.RegisterCookies(b"k" * 32))
    assert retries.reply(A, 500, now=1.0) is not None
    assert retries.reply(A, 500, now=1.0 + RETRY_INTERVAL / 2) is None
    assert retries.reply(B, 500, now=1.0 + RETRY_INTERVAL / 2) is not None
    assert retries.reply(A, 500, now=1.0 + RETRY_INTERVAL) is not None
    retries.sweep(1.0 + 2.5 * RETRY_INTERVAL)
    assert retries.sent == {}
