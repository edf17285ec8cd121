"""The fields a REGISTER and an ACK must carry (notify/message_checks.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mangasync_pipeline.notify.message_checks import (
    MAX_ACK_IDS,
    MAX_TS,
    ack_ids_valid,
    register_fields_valid,
)

GOOD: dict[str, Any] = {"user": "alice", "ts": 1_700_000_000, "nonce": "n" * 16, "sig": "s" * 64}


def test_a_well_formed_register_passes() -> None:
    assert register_fields_valid(**GOOD)


@pytest.mark.parametrize("field,value", [
    ("user", ""), ("user", "u" * 65), ("user", 7), ("user", None),
    ("ts", True), ("ts", 1.5), ("ts", "1700000000"), ("ts", MAX_TS), ("ts", -MAX_TS),
    ("ts", int("9" * 401)),
    ("nonce", "n" * 7), ("nonce", "n" * 65), ("nonce", None),
    ("sig", "s" * 129), ("sig", None),
])
def test_a_register_with_a_field_out_of_bounds_is_malformed(field: str, value: Any) -> None:
    assert not register_fields_valid(**{**GOOD, field: value})


def test_the_bounds_themselves_are_allowed() -> None:
    assert register_fields_valid("u" * 64, MAX_TS - 1, "n" * 64, "s" * 128)
    assert register_fields_valid("u", -MAX_TS + 1, "n" * 8, "")


@pytest.mark.parametrize("ids", [[], [1], list(range(1, MAX_ACK_IDS + 1)), [2**63 - 1]])
def test_acks_of_up_to_100_positive_ids_are_valid(ids: list[int]) -> None:
    assert ack_ids_valid(ids)


@pytest.mark.parametrize("ids", [None, 5, "1,2", {"1": 1}, list(range(1, MAX_ACK_IDS + 2)),
                                 [0], [-1], [2**63], [True], [1.0], ["1"]])
def test_anything_else_is_not_an_ack(ids: Any) -> None:
    assert not ack_ids_valid(ids)
