"""What every HTTP request passes before it reaches a route: the bearer token and the body limit.

Plain ASGI rather than FastAPI dependencies, so it also covers the OpenAPI document, the docs
and unknown paths, and costs one header lookup on the hot trigger path.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})  # the orchestrator's liveness probe has no token


def _matches(given: bytes, token: str | None) -> bool:
    if not token:
        return False
    scheme, _, value = given.partition(b" ")
    return scheme.lower() == b"bearer" and secrets.compare_digest(value.strip(),
                                                                  token.encode("utf-8"))


async def _refuse(send: Send, status: int, message: str,
                  headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *headers]})
    await send({"type": "http.response.body", "body": body})


class Gate:
    def __init__(self, app: ASGIApp, *, token: str | None, metrics_token: str | None,
                 body_limit: Callable[[str], int]) -> None:
        self.app = app
        self.token = token
        self.metrics_token = metrics_token
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path not in OPEN_PATHS and not self._authorised(path, scope):
            await _refuse(send, 401, "missing or wrong Authorization: Bearer token",
                          [(b"www-authenticate", b"Bearer")])
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.body_limit(path)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, 413, f"body over {limit} bytes")
            return
        # Read it all here (bounded) so a chunked upload cannot exceed the limit either.
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            raw.extend(message.get("body", b""))
            if len(raw) > limit:
                await _refuse(send, 413, f"body over {limit} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(raw), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorised(self, path: str, scope: Scope) -> bool:
        token = self.metrics_token if path == "/metrics" and self.metrics_token else self.token
        if not token:
            return True
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return _matches(given, token)
