"""The bearer-key check in front of the streamable HTTP transport.

An ASGI wrapper, not the SDK's OAuth resource-server machinery: cellbox keys are plain
bearer tokens the cellbox server already checks (``/platform/v1/keys/introspect``), so
the gate asks it, and answers a request without a valid key 401 before the MCP layer
sees it. A good answer is remembered for ``CACHE_S`` seconds to spare a round trip per
call; that cannot widen access, since every tool call is checked again by the cellbox
server with the same key (a revoked key fails its very next tool call).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import CellboxError
from ..sdk import AsyncSandboxClient, PermissionDenied
from .backend import bearer_key

CACHE_S = 10.0
CACHE_MAX = 1024
KeyCheck = Callable[[str], Awaitable[bool]]


def introspecting_check(api_url: str | None) -> KeyCheck:
    """A key check that asks the cellbox server whether the key is good (cached)."""
    good: dict[str, float] = {}

    async def check(key: str) -> bool:
        slot, now = hashlib.sha256(key.encode()).hexdigest(), time.monotonic()
        if good.get(slot, 0.0) > now:
            return True
        async with AsyncSandboxClient(api_url, key) as client:
            try:
                await client.whoami()
            except PermissionDenied:
                return False
        if len(good) >= CACHE_MAX:
            good.clear()
        good[slot] = now + CACHE_S
        return True

    return check


class BearerGate:
    """Pass HTTP requests with a good ``Authorization: Bearer`` key on to ``app``."""

    def __init__(self, app: ASGIApp, check: KeyCheck) -> None:
        self.app, self.check = app, check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: the session manager's start and stop
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = bearer_key(headers.get("authorization"))
        if key is None:
            await _deny(send, 401, "send the API key as 'Authorization: Bearer <key>'", "UNAUTHENTICATED")
            return
        try:
            ok = await self.check(key)
        except CellboxError as exc:  # the cellbox server is down or refused for another reason
            await _deny(send, 502, f"cannot check the key with the cellbox server: {exc.message}", "UPSTREAM")
            return
        if not ok:
            await _deny(send, 401, "the API key is not valid (unknown, revoked or expired)", "UNAUTHENTICATED")
            return
        await self.app(scope, receive, send)


async def _deny(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps({"error": message, "code": code}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="cellbox"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
