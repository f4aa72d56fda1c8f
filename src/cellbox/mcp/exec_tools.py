"""Tools that run things: a command to completion, and background processes.

``run_command`` goes through ``Sandbox.run`` (one streamed request) and counts the
output as it arrives: past ``max_output_bytes`` it stops reading, which hangs up the
``/run`` stream, and the in-sandbox agent then kills the command's process group; the
result says ``truncated``. So a runaway ``yes`` costs one limit's worth of memory here,
never the whole stream. ``timeout`` is enforced by the agent (it kills the tree).
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer

from ..sdk import OutputLine
from . import limits
from .backend import Backend, tool_errors
from .validate import Command, Env, OutputLimit, Pid, SandboxPath, SandboxRef, Tail, Timeout, check_env_values

SHELL = "/bin/sh"
# Extra seconds past the command's own timeout before we give up on the stream.
STREAM_GRACE_S = 30.0


class _OutputFull(Exception):
    """Raised from the output callback to stop reading a command's stream."""


class OutputCap:
    """Collects a command's lines up to ``limit`` bytes (UTF-8, newline included)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.truncated = limit, 0, False
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def __call__(self, line: OutputLine) -> None:
        data = line.line.encode() + b"\n"
        room = self.limit - self.used
        if len(data) > room:
            if room > 0:  # keep what fits, cut at a character boundary
                self.lines[line.stream].append(data[:room].decode(errors="ignore").rstrip("\n"))
            self.used, self.truncated = self.limit, True
            raise _OutputFull
        self.used += len(data)
        self.lines.setdefault(line.stream, []).append(line.line)

    def text(self, stream: str) -> str:
        return "\n".join(self.lines.get(stream, []))


def register(server: MCPServer, backend: Backend) -> None:
    """Add the command and process tools to ``server``."""
    _run_tool(server, backend)
    _process_tools(server, backend)


def _run_tool(server: MCPServer, backend: Backend) -> None:
    """run_command."""

    @server.tool()
    @tool_errors
    async def run_command(
        sandbox_id: SandboxRef,
        command: Command,
        ctx: Context,
        timeout: Timeout = limits.TIMEOUT_DEFAULT,
        max_output_bytes: OutputLimit = limits.OUTPUT_DEFAULT,
        working_dir: SandboxPath | None = None,
        env: Env | None = None,
    ) -> dict[str, Any]:
        """Run a shell command in a sandbox and wait for it. Returns exit_code, stdout,
        stderr; timed_out if `timeout` killed it; truncated if the output passed
        `max_output_bytes` (the command was then killed and exit_code is null)."""
        env = check_env_values(env)
        sbx = await backend.sandbox(ctx, sandbox_id)
        cap = OutputCap(max_output_bytes)
        result = None
        try:
            result = await sbx.run([SHELL, "-c", command], env=env, working_dir=working_dir, timeout=timeout,
                                   on_output=cap)
        except _OutputFull:
            pass
        return {
            "exit_code": None if result is None else result.exit_code,
            "stdout": cap.text("stdout"),
            "stderr": cap.text("stderr"),
            "timed_out": bool(result and result.timed_out),
            "oom_killed": bool(result and result.oom_killed),
            "truncated": cap.truncated,
            **({"note": f"output passed {max_output_bytes} bytes: the command was killed"} if cap.truncated else {}),
        }


def _process_tools(server: MCPServer, backend: Backend) -> None:
    """Background processes."""

    @server.tool()
    @tool_errors
    async def start_process(
        sandbox_id: SandboxRef, command: Command, ctx: Context,
        working_dir: SandboxPath | None = None, env: Env | None = None,
    ) -> dict[str, Any]:
        """Start a shell command in the background; returns its pid. Read its output
        with read_process_output, stop it with kill_process."""
        sbx = await backend.sandbox(ctx, sandbox_id)
        proc = await sbx.start_process([SHELL, "-c", command], env=check_env_values(env), working_dir=working_dir)
        return {"pid": proc.pid, "status": "running"}

    @server.tool()
    @tool_errors
    async def read_process_output(
        sandbox_id: SandboxRef, pid: Pid, ctx: Context,
        tail: Tail = limits.TAIL_DEFAULT, max_output_bytes: OutputLimit = limits.OUTPUT_DEFAULT,
    ) -> dict[str, Any]:
        """The status of a background process and the newest lines of its output
        (stdout and stderr interleaved): at most `tail` lines and `max_output_bytes`."""
        sbx = await backend.sandbox(ctx, sandbox_id)
        proc = sbx.get_process(pid)
        info = await proc.info()
        lines = await proc.output("output", tail=tail, max_bytes=max_output_bytes)
        return {"pid": pid, "status": info.status, "exit_code": info.exit_code, "signal": info.signal,
                "output": "\n".join(lines), "lines": len(lines)}

    @server.tool()
    @tool_errors
    async def kill_process(sandbox_id: SandboxRef, pid: Pid, ctx: Context) -> dict[str, Any]:
        """SIGKILL a background process (and its process group)."""
        sbx = await backend.sandbox(ctx, sandbox_id)
        await sbx.get_process(pid).kill()
        return {"pid": pid, "killed": True}

    @server.tool()
    @tool_errors
    async def list_processes(sandbox_id: SandboxRef, ctx: Context) -> dict[str, Any]:
        """The processes the sandbox's agent knows about (running and recently ended)."""
        sbx = await backend.sandbox(ctx, sandbox_id)
        procs = await sbx.list_processes()
        return {"processes": [{"pid": p.pid, "status": p.status, "command": p.command, "args": [a[:200] for a in p.args[:8]],
                               "exit_code": p.exit_code} for p in procs[-200:]]}
