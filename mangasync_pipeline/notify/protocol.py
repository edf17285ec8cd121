"""Wire format of the MangaHub notification protocol, version 4 (PROTOCOL.md).

Shared by the server, the `listen` client, tests and the benchmark, so that both ends agree on
signing, size limits and field names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

PROTOCOL_VERSION = 4
MAX_DATAGRAM = 1200
ELLIPSIS = "…"

NOTIFICATION_TYPES = ("NEW_MANGA", "NEW_CHAPTER", "MANGA_UPDATE")
ERROR_CODES = ("AUTH_FAILED", "BAD_REQUEST", "SESSION_UNKNOWN")

# Fields shortened, in this order, when a notification does not fit in one datagram.
_CUTTABLE = ("message", "title")


def register_string(user: str, ts: int, nonce: str, cookie: str = "") -> str:
    return f"REGISTER|{user}|{ts}|{nonce}|{cookie}"


def sign_register(token: str, user: str, ts: int, nonce: str, cookie: str = "") -> str:
    """Lowercase hex HMAC-SHA256 of `REGISTER|<user>|<ts>|<nonce>|<cookie>` keyed with the
    token. The cookie is signed too: a REGISTER seen on the wire cannot be sent again from
    another address with that address's own cookie."""
    return hmac.new(
        token.encode("utf-8"), register_string(user, ts, nonce, cookie).encode("utf-8"),
        hashlib.sha256).hexdigest()


def signature_matches(token: str, user: str, ts: int, nonce: str, sig: str,
                      cookie: str = "") -> bool:
    expected = sign_register(token, user, ts, nonce, cookie)
    return hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8", "replace"))


def register_message(user: str, token: str, *, ts: int | None = None,
                     nonce: str | None = None, cookie: str | None = None) -> dict[str, Any]:
    ts = int(time.time()) if ts is None else ts
    nonce = secrets.token_urlsafe(16) if nonce is None else nonce
    msg: dict[str, Any] = {"type": "REGISTER", "user": user, "ts": ts, "nonce": nonce,
                           "sig": sign_register(token, user, ts, nonce, cookie or "")}
    if cookie is not None:
        msg["cookie"] = cookie
    return msg


COOKIE_PERIOD = 30  # seconds: a cookie is accepted in its period and the next one


class RegisterCookies:
    """Stateless proof that an address receives (QUIC Retry, DTLS HelloVerifyRequest).

    A cookie is an HMAC of the address, port and time period under a key derived from the
    server's master key (so every server sharing that key accepts it), led by the period's
    parity so that checking one costs a single HMAC and no memory: a REGISTER from a forged
    source address never gets further.
    """

    def __init__(self, key: bytes, period: float = COOKIE_PERIOD) -> None:
        self.key = hmac.digest(key, b"mangasync register cookie", "sha256")
        self.period = period

    def _cookie(self, addr: tuple[str, int], slot: int) -> str:
        mac = hmac.digest(self.key, f"{slot}|{addr[0]}|{addr[1]}".encode(), "sha256")
        return "ab"[slot % 2] + base64.urlsafe_b64encode(mac[:15]).decode("ascii")

    def issue(self, addr: tuple[str, int], now: float | None = None) -> str:
        return self._cookie(addr, int((time.time() if now is None else now) // self.period))

    def valid(self, cookie: Any, addr: tuple[str, int], now: float | None = None) -> bool:
        if not isinstance(cookie, str) or len(cookie) != 21 or cookie[0] not in "ab":
            return False
        slot = int((time.time() if now is None else now) // self.period)
        if "ab"[slot % 2] != cookie[0]:
            slot -= 1  # issued in the previous period
        return hmac.compare_digest(cookie.encode("ascii", "replace"),
                                   self._cookie(addr, slot).encode("ascii"))


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
