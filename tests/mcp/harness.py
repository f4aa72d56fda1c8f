"""Talking to ``cellbox mcp`` with the official MCP client, the way an agent's host does.

``stdio_target`` starts ``cellbox mcp`` as a subprocess of the client (the MCP SDK's
``stdio_client``: it stops it when the session ends); ``http_target`` points at a
``cellbox mcp --transport http`` the fixture started, with a bearer key of our choice.
``session(target, fn)`` runs ``fn(client)`` inside one MCP session; ``call`` returns a
tool's structured result, or the error text a model would read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[2]
CELLBOX = ROOT / ".venv" / "bin" / "cellbox"
T = TypeVar("T")


def stdio_target(api_url: str, api_key: str | None = None) -> StdioServerParameters:
    args = ["mcp", "--api-url", api_url] + (["--api-key", api_key] if api_key else [])
    return StdioServerParameters(command=str(CELLBOX), args=args, env={"PATH": os.environ.get("PATH", "")})


def http_target(url: str, key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=300))


def session(target: Any, fn: Callable[[Client], Awaitable[T]]) -> T:
    async def main() -> T:
        async with Client(target) as client:
            return await fn(client)

    return anyio.run(main)


@dataclass
class ToolAnswer:
    ok: bool
    data: dict[str, Any]
    text: str


async def call(client: Client, tool: str, **args: Any) -> ToolAnswer:
    result = await client.call_tool(tool, args)
    text = "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
    data = result.structured_content if isinstance(result.structured_content, dict) else {}
    if not data and not result.is_error:
        try:
            data = json.loads(text)
        except ValueError:
            data = {}
    return ToolAnswer(not result.is_error, data, text)
