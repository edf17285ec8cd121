"""httpx's one-call functions (`web.post(url, ...)` for `httpx.post(url, ...)`) and its
`Client`, without a TLS set-up per call.

httpx builds a client for each such call, and a client loads the CA bundle into a new TLS
context: about 20 ms of CPU, more than the loopback request itself, hundreds of times a
suite. These share the process's context (`mangasync_pipeline.tls`); each call still opens
its own connection, as httpx's functions do.
"""

from __future__ import annotations

import functools

import httpx

from mangasync_pipeline.tls import tls_context

request = functools.partial(httpx.request, verify=tls_context())
get = functools.partial(httpx.get, verify=tls_context())
post = functools.partial(httpx.post, verify=tls_context())
Client = functools.partial(httpx.Client, verify=tls_context())
