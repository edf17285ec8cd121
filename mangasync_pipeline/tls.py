"""The process's one TLS context for outgoing HTTPS (MangaDex, the notification server, the
alert webhook).

httpx builds a new context, and loads the CA bundle into it, for every client it creates:
about 20 ms of CPU, paid by each sensor tick, run and delivery. A context is safe to share
between clients and threads, so it is built once, as httpx would build it (its defaults,
SSL_CERT_FILE and SSL_CERT_DIR honoured).
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()
