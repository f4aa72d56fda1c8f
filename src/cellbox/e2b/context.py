"""What every envd call starts with: which sandbox, is the token right, where is its agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from ..errors import CellboxError
from .manager_api import SandboxService
from ..proxy import routing
from ..proxy.errors import ProxyError
from . import link
from .tokens import TokenKey

ENVD_PORT = 49983
TOKEN_HEADER = "x-access-token"
T = TypeVar("T")

# Our errors' HTTP statuses as Connect codes (the SDK maps codes to its exceptions:
# NOT_FOUND -> NotFoundException, INVALID_ARGUMENT -> InvalidArgumentException, ...).
_CODES = {400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
          404: Code.NOT_FOUND, 409: Code.ALREADY_EXISTS, 410: Code.NOT_FOUND, 413: Code.RESOURCE_EXHAUSTED,
          429: Code.RESOURCE_EXHAUSTED, 501: Code.UNIMPLEMENTED, 502: Code.UNAVAILABLE,
          503: Code.UNAVAILABLE, 504: Code.DEADLINE_EXCEEDED}


def connect_error(exc: CellboxError) -> ConnectError:
    return ConnectError(_CODES.get(exc.status, Code.INTERNAL), f"{exc.code}: {exc.message}")


@dataclass
class Env:
    """Shared by the services of one envd view."""

    service: SandboxService
    tokens: TokenKey
    domain: str | None = None
    state: dict[str, Any] = field(default_factory=dict)  # per-service scratch (watchers)

    def sandbox_of(self, headers: Any) -> str:
        """The sandbox a request is for (the proxy's own routing rule), token checked."""
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        try:
            target = routing.target_of(raw, self.domain)
        except ProxyError as exc:
            raise EnvdDenied(400, exc.code, exc.message) from None
        if target.port != ENVD_PORT:
            raise EnvdDenied(400, "NOT_ENVD", f"this is envd (port {ENVD_PORT}), not port {target.port}")
        if not self.tokens.check(target.ref, headers.get(TOKEN_HEADER)):
            # The same answer for "no such sandbox": a probe learns nothing.
            raise EnvdDenied(401, "INVALID_ACCESS_TOKEN", "missing or wrong X-Access-Token for this sandbox")
        return target.ref

    async def locate(self, headers: Any) -> link.Agent:
        """The agent for a request; ``CellboxError`` (with its HTTP status) otherwise."""
        return await link.locate(self.service, self.sandbox_of(headers))

    async def agent(self, headers: Any) -> link.Agent:
        """``locate`` for the Connect services: errors as Connect errors."""
        try:
            return await self.locate(headers)
        except CellboxError as exc:
            raise connect_error(exc) from None


class EnvdDenied(CellboxError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


def user_of(headers: Any) -> str | None:
    """The user a call runs as: envd's ``Authorization: Basic base64(user:)`` (the SDK's
    ``user=``), or None for the image's default user."""
    import base64
    import binascii

    value = headers.get("authorization") or ""
    if not value.lower().startswith("basic "):
        return None
    try:
        user = base64.b64decode(value[6:].strip(), validate=True).decode().split(":", 1)[0]
    except (binascii.Error, UnicodeDecodeError):
        raise ConnectError(Code.INVALID_ARGUMENT, "Authorization: not a valid Basic credential") from None
    return user or None


async def guarded(call: Callable[[], Awaitable[T]]) -> T:
    """Run an agent call, turning our errors into Connect errors with the same meaning."""
    try:
        return await call()
    except CellboxError as exc:
        raise connect_error(exc) from None
