"""Lifecycle tools: create, inspect, list, terminate; suspend/resume; snapshot; clone.

Every sandbox-changing call goes through ``AsyncSandboxClient`` with the caller's key,
so quotas, projects and the audit log apply exactly as for any other client. A clone
is all or nothing here: if some copies fail, the ones that started are terminated
before the error is reported, so a model that reads the error has nothing to clean up.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from ..sdk import CopyError
from . import limits
from .backend import Backend, info_dict, model_message, tool_errors
from .validate import ImageRef, NetworkRule, SandboxName, SandboxRef, SnapshotRef

Cpus = Annotated[float, Field(ge=limits.CPUS_MIN, le=limits.CPUS_MAX, description="vCPUs")]
MemoryMb = Annotated[int, Field(ge=limits.MEMORY_MIN_MB, le=limits.MEMORY_MAX_MB, description="Memory in MiB")]
DiskMb = Annotated[int, Field(ge=64, le=limits.DISK_MAX_MB, description="Root filesystem quota in MiB")]
Lifetime = Annotated[int, Field(ge=1, le=limits.SANDBOX_TIMEOUT_MAX,
                                description="Seconds after which the sandbox is terminated")]
Rules = Annotated[list[NetworkRule], Field(max_length=limits.NETWORK_RULES_MAX)]
Times = Annotated[int, Field(ge=1, le=limits.CLONE_MAX, description="How many copies")]


def snapshot_dict(snap: Any) -> dict[str, Any]:
    return {"id": snap.id, "status": snap.status, "sandbox_id": snap.sandbox_id, "type": snap.snapshot_type,
            "size_bytes": snap.size_bytes, "created_at": snap.created_at}


def register(server: MCPServer, backend: Backend) -> None:
    """Add the lifecycle tools to ``server``."""
    _basic_tools(server, backend)
    _memory_state_tools(server, backend)


def _basic_tools(server: MCPServer, backend: Backend) -> None:
    """Create, inspect, list, terminate."""

    @server.tool()
    @tool_errors
    async def create_sandbox(
        ctx: Context,
        image: ImageRef | None = None,
        cpus: Cpus = 1.0,
        memory_mb: MemoryMb = 1024,
        disk_mb: DiskMb | None = None,
        timeout_secs: Lifetime | None = None,
        name: SandboxName | None = None,
        allow_internet_access: bool = True,
        allow_out: Rules | None = None,
        deny_out: Rules | None = None,
        snapshot_id: SnapshotRef | None = None,
    ) -> dict[str, Any]:
        """Create a sandbox (an isolated Linux machine) and wait until it runs. Network:
        allow_internet_access=false cuts egress; allow_out / deny_out list IPs, CIDRs or
        host names. snapshot_id starts it from a snapshot. Returns its id."""
        info = await backend.client(ctx).create(
            image, cpus, memory_mb, disk_mb, timeout_secs, name,
            allow_internet_access=allow_internet_access, allow_out=allow_out, deny_out=deny_out,
            snapshot_id=snapshot_id, startup_timeout=limits.STARTUP_TIMEOUT,
        )
        return info_dict(info)

    @server.tool()
    @tool_errors
    async def get_sandbox(sandbox_id: SandboxRef, ctx: Context) -> dict[str, Any]:
        """One sandbox: status, resources, name."""
        return info_dict(await backend.client(ctx).get(sandbox_id))

    @server.tool()
    @tool_errors
    async def list_sandboxes(ctx: Context, include_terminated: bool = False) -> dict[str, Any]:
        """The sandboxes of your project (live ones, or all with include_terminated)."""
        infos = await backend.client(ctx).list("all" if include_terminated else None)
        shown = infos[: limits.LIST_MAX_SANDBOXES]
        return {"sandboxes": [info_dict(i) for i in shown], "truncated": len(infos) > len(shown)}

    @server.tool()
    @tool_errors
    async def terminate_sandbox(sandbox_id: SandboxRef, ctx: Context) -> dict[str, Any]:
        """Terminate a sandbox: its processes and files are gone (snapshots stay)."""
        client = backend.client(ctx)
        await client.get(sandbox_id)  # a 404 here is an answer; delete treats "gone" as done
        await client.delete(sandbox_id)
        backend.forget(sandbox_id)
        return {"id": sandbox_id, "terminated": True}


def _memory_state_tools(server: MCPServer, backend: Backend) -> None:
    """Suspend/resume, snapshots and clones."""

    @server.tool()
    @tool_errors
    async def suspend_sandbox(sandbox_id: SandboxRef, ctx: Context) -> dict[str, Any]:
        """Suspend a named sandbox: memory and files go to disk, nothing runs, no RAM used."""
        return info_dict(await backend.client(ctx).suspend(sandbox_id, timeout=limits.STARTUP_TIMEOUT))

    @server.tool()
    @tool_errors
    async def resume_sandbox(sandbox_id: SandboxRef, ctx: Context) -> dict[str, Any]:
        """Resume a suspended sandbox where it left off (same ID, files, processes)."""
        return info_dict(await backend.client(ctx).resume(sandbox_id, timeout=limits.STARTUP_TIMEOUT))

    @server.tool()
    @tool_errors
    async def snapshot_sandbox(
        sandbox_id: SandboxRef, ctx: Context, snapshot_type: Literal["filesystem", "memory"] = "filesystem",
    ) -> dict[str, Any]:
        """Snapshot a running sandbox (it runs on). 'memory' keeps its processes too.
        Start new sandboxes from it with create_sandbox(snapshot_id=...)."""
        snap = await backend.client(ctx).snapshot(sandbox_id, snapshot_type, timeout=limits.STARTUP_TIMEOUT)
        return snapshot_dict(snap)

    @server.tool()
    @tool_errors
    async def delete_snapshot(snapshot_id: SnapshotRef, ctx: Context) -> dict[str, Any]:
        """Delete a snapshot."""
        client = backend.client(ctx)
        await client.get_snapshot(snapshot_id)  # "not found" is worth telling the model
        await client.delete_snapshot(snapshot_id)
        return {"id": snapshot_id, "deleted": True}

    @server.tool()
    @tool_errors
    async def clone_sandbox(sandbox_id: SandboxRef, ctx: Context, times: Times = 1) -> dict[str, Any]:
        """Make `times` live copies of a running sandbox (files and running processes),
        each with its own ID. All or nothing: on failure none is left running."""
        client = backend.client(ctx)
        try:
            infos = await client.copy(sandbox_id, times, startup_timeout=limits.STARTUP_TIMEOUT)
        except CopyError as exc:
            for info in exc.sandboxes:
                await client.delete(info.id)
            raise ToolError(model_message(exc) + " (the copies that started were terminated)") from exc
        return {"ids": [i.id for i in infos]}
