"""The one pattern for a MangaDex id (a UUID), for every layer that accepts one from a user."""

from __future__ import annotations

import re

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and UUID_RE.match(value) is not None
