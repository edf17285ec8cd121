"""Wire format of the MangaHub notification protocol, version 2 (PROTOCOL.md).

Shared by the server, the `listen` client, tests and the benchmark, so that both ends agree on
signing, size limits and field names.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

PROTOCOL_VERSION = 2
MAX_DATAGRAM = 1200
ELLIPSIS = "…"

NOTIFICATION_TYPES = ("NEW_MANGA", "NEW_CHAPTER", "MANGA_UPDATE")
ERROR_CODES = ("AUTH_FAILED", "BAD_REQUEST", "SESSION_UNKNOWN")

# Fields shortened, in this order, when a notification does not fit in one datagram.
_CUTTABLE = ("message", "title")


def register_string(user: str, ts: int, nonce: str) -> str:
    return f"REGISTER|{user}|{ts}|{nonce}"


def sign_register(token: str, user: str, ts: int, nonce: str) -> str:
    """Lowercase hex HMAC-SHA256 of `REGISTER|<user>|<ts>|<nonce>` keyed with the token."""
    return hmac.new(
        token.encode("utf-8"), register_string(user, ts, nonce).encode("utf-8"), hashlib.sha256
    ).hexdigest()


def signature_matches(token: str, user: str, ts: int, nonce: str, sig: str) -> bool:
    expected = sign_register(token, user, ts, nonce)
    return hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8", "replace"))


def register_message(user: str, token: str, *, ts: int | None = None,
                     nonce: str | None = None) -> dict[str, Any]:
    ts = int(time.time()) if ts is None else ts
    nonce = secrets.token_urlsafe(16) if nonce is None else nonce
    return {"type": "REGISTER", "user": user, "ts": ts, "nonce": nonce,
            "sig": sign_register(token, user, ts, nonce)}


def _dump(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode(msg: dict[str, Any], limit: int = MAX_DATAGRAM) -> bytes:
    """JSON bytes of `msg`, with message then title cut (with an ellipsis) to fit `limit`."""
    data = _dump(msg)
    if len(data) <= limit:
        return data
    msg = dict(msg)
    for field in _CUTTABLE:
        text = msg.get(field)
        if not isinstance(text, str) or not text:
            continue
        msg[field] = ELLIPSIS
        if len(_dump(msg)) > limit:
            continue  # even the ellipsis alone is too long: shorten the next field too
        lo, hi = 0, len(text) - 1  # the longest prefix that fits, by bisection on characters
        while lo < hi:
            mid = (lo + hi + 1) // 2
            msg[field] = text[:mid] + ELLIPSIS
            if len(_dump(msg)) <= limit:
                lo = mid
            else:
                hi = mid - 1
        msg[field] = text[:lo] + ELLIPSIS
        return _dump(msg)
    data = _dump(msg)
    if len(data) > limit:
        raise ValueError(f"{msg.get('type')} message does not fit in {limit} bytes")
    return data


_WIDEST_ID = 10**18  # 19 digits, as wide as any positive 64-bit id


def notification_template(msg: dict[str, Any]) -> tuple[bytes, bytes]:
    """`encode(msg)` split around its id, so a broadcast encodes once for every recipient:
    `prefix + str(id).encode() + suffix`. Cut for the widest id, so every one fits."""
    data = encode({**msg, "id": _WIDEST_ID})
    marker = b'"id":' + str(_WIDEST_ID).encode()
    head, _, tail = data.partition(marker)
    return head + b'"id":', tail


def decode(data: bytes) -> dict[str, Any] | None:
    """The JSON object in a datagram, or None for anything else (garbage never raises)."""
    if len(data) > MAX_DATAGRAM:
        return None
    try:
        msg = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return None
    return msg


def error_message(code: str, message: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "ERROR", "code": code}
    if message:
        msg["message"] = message
    return msg
