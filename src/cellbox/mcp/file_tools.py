"""File tools, and one MCP resource template for every sandbox's files.

Text goes as text; anything that is not UTF-8 goes as base64 (``encoding`` says which),
so a binary file never corrupts the JSON a model reads. Reads are cut at
``max_bytes`` (the SDK stops the download there), writes are bounded by
``limits.WRITE_MAX``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import Field

from ..errors import CellboxError
from . import limits
from .backend import Backend, model_message, tool_errors
from .validate import SandboxPath, SandboxRef, check_path, check_ref

ReadLimit = Annotated[int, Field(ge=1, le=limits.READ_MAX, description="Most bytes to return")]
Content = Annotated[str, Field(max_length=limits.WRITE_MAX * 4 // 3 + 4,
                               description="The file's contents: text, or base64 with encoding='base64'")]
RESOURCE_URI = "cellbox://sandboxes/{sandbox_id}/files/{+path}"


def decode_content(content: str, encoding: str) -> bytes:
    """The bytes to write; ToolError for bad base64 or an oversize payload."""
    if encoding == "base64":
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ToolError(f"content is not valid base64: {exc}") from exc
    else:
        data = content.encode()
    if len(data) > limits.WRITE_MAX:
        raise ToolError(f"content is {len(data)} bytes; at most {limits.WRITE_MAX} per write")
    return data


def encode_content(data: bytes) -> tuple[str, str]:
    """``(text, encoding)``: UTF-8 text as is, anything else as base64."""
    try:
        return data.decode(), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def register(server: MCPServer, backend: Backend) -> None:
    """Add the file tools and the files resource to ``server``."""
    _read_write_tools(server, backend)
    _listing_tools(server, backend)


def _read_write_tools(server: MCPServer, backend: Backend) -> None:
    """read_file and write_file."""

    @server.tool()
    @tool_errors
    async def read_file(
        sandbox_id: SandboxRef, path: SandboxPath, ctx: Context, max_bytes: ReadLimit = limits.READ_DEFAULT,
    ) -> dict[str, Any]:
        """Read a file from a sandbox (at most `max_bytes`; `truncated` says if there was more)."""
        sbx = await backend.sandbox(ctx, sandbox_id)
        data = await sbx.read_file(path, max_bytes=max_bytes)
        truncated = len(data) > max_bytes
        text, encoding = encode_content(data[:max_bytes])
        return {"path": path, "content": text, "encoding": encoding, "bytes": min(len(data), max_bytes),
                "truncated": truncated}

    @server.tool()
    @tool_errors
    async def write_file(
        sandbox_id: SandboxRef, path: SandboxPath, content: Content, ctx: Context,
        encoding: Literal["utf-8", "base64"] = "utf-8",
    ) -> dict[str, Any]:
        """Create or replace a file in a sandbox (parent directories are made)."""
        data = decode_content(content, encoding)
        sbx = await backend.sandbox(ctx, sandbox_id)
        await sbx.write_file(path, data)
        return {"path": path, "bytes": len(data)}


def _listing_tools(server: MCPServer, backend: Backend) -> None:
    """Directory listing, deletion, and the files resource."""

    @server.tool()
    @tool_errors
    async def list_files(sandbox_id: SandboxRef, path: SandboxPath, ctx: Context) -> dict[str, Any]:
        """List a directory in a sandbox: name, is_dir and size of each entry."""
        sbx = await backend.sandbox(ctx, sandbox_id)
        entries = await sbx.list_directory(path)
        shown = entries[: limits.LIST_MAX_ENTRIES]
        return {"path": path, "entries": [{"name": e.name, "is_dir": e.is_dir, "size": e.size} for e in shown],
                "truncated": len(entries) > len(shown)}

    @server.tool()
    @tool_errors
    async def delete_file(sandbox_id: SandboxRef, path: SandboxPath, ctx: Context) -> dict[str, Any]:
        """Delete a file, or a directory with everything in it."""
        if path == "/":
            raise ToolError("refusing to delete '/'")
        sbx = await backend.sandbox(ctx, sandbox_id)
        await sbx.delete_file(path)
        return {"path": path, "deleted": True}

    @server.resource(RESOURCE_URI, name="sandbox-file", description="A file in a sandbox (first 4 MiB)")
    async def sandbox_file(sandbox_id: str, path: str, ctx: Context) -> str | bytes:
        """The file at ``/path`` in the sandbox. The SDK's resource security already
        refuses ``..`` and absolute values; the same checks as the tools run again."""
        try:
            full = check_path("/" + path)
            sbx = await backend.sandbox(ctx, check_ref(sandbox_id))
            data = await sbx.read_file(full, max_bytes=limits.READ_MAX)
        except ValueError as exc:
            raise ResourceError(str(exc)) from exc
        except CellboxError as exc:
            raise ResourceError(model_message(exc)) from exc
        data = data[: limits.READ_MAX]
        text, encoding = encode_content(data)
        return text if encoding == "utf-8" else data

