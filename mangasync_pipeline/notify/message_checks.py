"""What a well-formed REGISTER and ACK carry (PROTOCOL.md, "UDP"): checks on parsed fields.

Pure functions, so the limits are read in one place and tested without a socket.
"""

from __future__ import annotations

from typing import Any

MAX_ACK_IDS = 100
MAX_TS = 2**53  # a REGISTER's `ts` beyond this is malformed (and would not fit a float)


def register_fields_valid(user: Any, ts: Any, nonce: Any, sig: Any) -> bool:
    """A user name of 1 to 64 characters, an integer timestamp, a nonce of 8 to 64 characters
    and a signature of at most 128."""
    return (isinstance(user, str) and 0 < len(user) <= 64 and type(ts) is int
            and -MAX_TS < ts < MAX_TS
            and isinstance(nonce, str) and 8 <= len(nonce) <= 64
            and isinstance(sig, str) and len(sig) <= 128)


def ack_ids_valid(ids: Any) -> bool:
    """A list of at most `MAX_ACK_IDS` positive 64-bit integer ids (booleans are not ids)."""
    return (isinstance(ids, list) and len(ids) <= MAX_ACK_IDS
            and all(type(i) is int and 0 < i < 2**63 for i in ids))
