"""Which cellbox server and key a tool call acts with, and errors as messages for a model.

Over stdio the MCP server has one caller, the process that started it: it uses the key
found the CLI's way (``--api-key``, ``CELLBOX_API_KEY``, …, ``admin.key``). Over HTTP
each request brings its own key (``Authorization: Bearer``), checked by ``http_gate``;
the server's own key is never used there, so one caller cannot borrow another's (or
root's) project. Every call goes through ``cellbox.sdk``, and the cellbox server scopes
it to the key's project: another project's sandbox is "not found", as in the API.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from ..errors import CellboxError
from ..sdk import AsyncSandbox, AsyncSandboxClient
from ..sdk._errors import SandboxNotFoundError, SnapshotNotFoundError
from . import limits

P = ParamSpec("P")
T = TypeVar("T")

# Clients kept per key (each holds a connection pool); an evicted one is closed once
# any call it may still be serving has had time to end.
CLIENT_CACHE_SIZE = 32
EVICT_GRACE_S = limits.TIMEOUT_MAX + 60
# A sandbox handle (its proxy URL) is reused for a while, saving the GET that each tool
# call would otherwise start with. Safe: the proxy checks the key on every data-plane
# request, so a cached handle grants nothing; a sandbox gone since is a 404 there. Only
# handles looked up by ID are kept (a name can later mean another sandbox).
HANDLE_TTL_S = 30.0
HANDLE_CACHE_SIZE = 1024


class Backend:
    """SDK clients for tool calls: one per API key, found from the transport."""

    def __init__(self, api_url: str | None, api_key: str | None, *, keys_from_requests: bool) -> None:
        self.api_url = api_url
        self._own_key = api_key
        self.keys_from_requests = keys_from_requests
        self._clients: OrderedDict[str, AsyncSandboxClient] = OrderedDict()
        self._handles: dict[tuple[str, str], tuple[float, AsyncSandbox]] = {}

    def key_for(self, ctx: Context | None) -> str | None:
        """The key this call acts with: the request's bearer over HTTP, ours over stdio."""
        if not self.keys_from_requests:
            return self._own_key
        headers = ctx.headers if ctx is not None else None
        key = bearer_key(headers.get("authorization") if headers else None)
        if key is None:  # http_gate refuses such requests first; this is the backstop
            raise ToolError("unauthenticated: send the API key as 'Authorization: Bearer <key>'")
        return key

    def _slot(self, ctx: Context | None) -> tuple[str, str | None]:
        key = self.key_for(ctx)
        return hashlib.sha256((key or "").encode()).hexdigest(), key

    def client(self, ctx: Context | None) -> AsyncSandboxClient:
        slot, key = self._slot(ctx)
        client = self._clients.pop(slot, None) or AsyncSandboxClient(self.api_url, key)
        self._clients[slot] = client
        while len(self._clients) > CLIENT_CACHE_SIZE:
            _, old = self._clients.popitem(last=False)
            asyncio.get_running_loop().call_later(EVICT_GRACE_S, lambda c=old: asyncio.ensure_future(c.close()))
        return client

    async def sandbox(self, ctx: Context | None, ref: str) -> AsyncSandbox:
        """A handle on sandbox ``ref`` (sharing the key's client; nothing to close)."""
        cache_key, now = (self._slot(ctx)[0], ref), time.monotonic()
        hit = self._handles.get(cache_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        sbx = await self.client(ctx).connect(ref)
        if sbx.id == ref:
            if len(self._handles) >= HANDLE_CACHE_SIZE:
                self._handles.clear()
            self._handles[cache_key] = (now + HANDLE_TTL_S, sbx)
        return sbx

    def forget(self, ref: str) -> None:
        """Drop cached handles on ``ref`` (it was terminated, or answered "not found")."""
        for cache_key in [k for k in self._handles if k[1] == ref]:
            del self._handles[cache_key]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def bearer_key(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def model_message(exc: CellboxError) -> str:
    """One line a model can act on: what kind of failure, and the server's own words."""
    if isinstance(exc, SandboxNotFoundError):
        return f"not found: {exc.message} (check the ID with list_sandboxes)"
    if isinstance(exc, SnapshotNotFoundError):
        return f"not found: {exc.message}"
    kind = type(exc).__name__
    code = f" [{exc.code}]" if getattr(exc, "code", None) else ""
    return f"{kind}{code}: {exc.message}"


def tool_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn SDK errors and timeouts into ``ToolError``: the model gets the message, not
    a traceback (any other exception is a bug: the SDK logs it and tells the model only
    that the tool failed)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except CellboxError as exc:
            raise ToolError(model_message(exc)) from exc
        except TimeoutError as exc:
            raise ToolError("timed out waiting for the sandbox; try again or raise the timeout") from exc

    return wrapper


def info_dict(info: Any) -> dict[str, Any]:
    """The parts of a ``SandboxInfo`` a model needs."""
    return {
        "id": info.id, "name": info.name, "status": info.status, "image": info.image, "cpus": info.cpus,
        "memory_mb": info.memory_mb, "disk_mb": info.disk_mb, "timeout_secs": info.timeout_secs,
        "created_at": info.created_at, "project": info.namespace,
    }
