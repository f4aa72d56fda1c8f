"""PTY sessions through envd (Start with ``pty``, SendInput ``pty`` bytes, Update =
resize, SendSignal on a PTY's pid): not translated yet onto the agent's PTY API (a
WebSocket per session); every entry point says so with UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from .context import Env
from .link import Agent

_NOT_YET = "PTY sessions through the E2B SDK are not supported by cellbox yet (use the tensorlake or cellbox SDK's PTY)"


async def start_pty(env: Env, agent: Agent, request: Any) -> AsyncIterator[Any]:
    raise ConnectError(Code.UNIMPLEMENTED, _NOT_YET)
    yield  # pragma: no cover - makes this an async generator


async def resize(env: Env, agent: Agent, pid: int, request: Any) -> None:
    raise ConnectError(Code.UNIMPLEMENTED, _NOT_YET)


async def send(env: Env, agent: Agent, pid: int, data: bytes) -> None:
    raise ConnectError(Code.UNIMPLEMENTED, _NOT_YET)


async def kill_pty(env: Env, agent: Agent, pid: int) -> bool:
    """True if ``pid`` was a PTY session of ours and is now killed."""
    return False
