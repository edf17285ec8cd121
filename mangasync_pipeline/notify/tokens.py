"""Readers' tokens, derived from the server's master key: nothing secret is stored per reader.

A token is HMAC-SHA256(master key, "mangasync reader token|<user id>|<version>"), URL-safe
base64. The database holds only the version; anyone who reads the database learns nothing
that signs a REGISTER. The key comes from `MANGASYNC_SECRET_KEY`, or from a file created with
mode 0600 on first use (`MANGASYNC_SECRET_KEY_FILE`, by default beside the local database).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from mangasync_pipeline.config import ConfigError, Settings, decode_master_key

KEY_BYTES = 32


def _create_key_file(path: Path) -> None:
    """Write a new key with mode 0600; a concurrent creator's key wins if it came first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(KEY_BYTES) + "\n")
    try:
        os.link(tmp, path)  # fails if the file exists: never replace a key in use
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_private_file(path: Path, name: str) -> str:
    """The text of a file holding a secret, refused (one line, as ssh does for a private key)
    when its mode lets anyone but its owner read or change it."""
    try:
        mode = path.stat().st_mode
        if os.name == "posix" and mode & 0o077:
            raise ConfigError(
                f"{name}={str(path)!r}: readable or writable by others (mode "
                f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}` (refused, as ssh refuses "
                "such a private key)")
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"{name}={str(path)!r}: cannot read it "
                          f"({exc.strerror or exc})") from None


def master_key(settings: Settings | None = None) -> bytes:
    """The server's master key: from the environment, else the key file (created if absent)."""
    settings = Settings.from_env() if settings is None else settings
    if settings.secret_key is not None:
        return decode_master_key(settings.secret_key, "MANGASYNC_SECRET_KEY")
    path = Path(settings.secret_key_file)
    if not path.exists():
        _create_key_file(path)
    text = read_private_file(path, "MANGASYNC_SECRET_KEY_FILE")
    return decode_master_key(text, f"MANGASYNC_SECRET_KEY_FILE={str(path)!r}")


def reader_token(key: bytes, user_id: int, version: int) -> str:
    """The token of one reader at one version (32 characters, 192 bits)."""
    digest = hmac.new(key, f"mangasync reader token|{user_id}|{version}".encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")
