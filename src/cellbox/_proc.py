"""Running host commands: one helper so every call has a timeout and a uniform error.

Host tools (runc, btrfs, ip, nft, criu) are the kernel-facing edge of cellbox; their
failures are translated here, once, into :class:`~cellbox.errors.CommandFailed`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .errors import CommandFailed, InternalFailure


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run(
    argv: list[str],
    *,
    input: bytes | None = None,
    timeout: float = 60.0,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> Result:
    """Run ``argv`` to completion and return its output; raise ``CommandFailed`` on error."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except FileNotFoundError as exc:
        raise InternalFailure(f"{argv[0]} is not installed (run scripts/setup.sh)") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandFailed(argv, -9, f"timed out after {timeout:.0f}s") from None
    result = Result(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stderr or result.stdout)
    return result


async def stream(
    argv: list[str],
    on_line: Callable[[str], None],
    *,
    timeout: float = 3600.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> Result:
    """Run ``argv``, handing each line of its output (stdout and stderr merged, as a
    terminal shows them) to ``on_line`` as it comes; raise ``CommandFailed`` on a
    non-zero exit, with the last lines as the message. Killed on timeout or when the
    caller is cancelled, so no tool outlives the request that started it."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise InternalFailure(f"{argv[0]} is not installed (run scripts/setup.sh)") from exc
    tail: list[str] = []

    async def pump() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tail.append(line)
            del tail[:-40]
            on_line(line)
        await proc.wait()

    try:
        await asyncio.wait_for(pump(), timeout)
    except BaseException:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group we started, by its PID
            except ProcessLookupError:
                pass
            await proc.wait()
        if isinstance(sys.exc_info()[1], asyncio.TimeoutError):
            raise CommandFailed(argv, -9, f"timed out after {timeout:.0f}s") from None
        raise
    output = "\n".join(tail)
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode or 0, output)
    return Result(proc.returncode or 0, output, "")


def run_sync(argv: list[str], *, input: bytes | None = None, timeout: float = 600.0, check: bool = True) -> Result:
    """Blocking twin of :func:`run`, for setup and tests (no event loop there)."""
    try:
        cp = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise InternalFailure(f"{argv[0]} is not installed (run scripts/setup.sh)") from exc
    result = Result(cp.returncode, cp.stdout.decode(errors="replace"), cp.stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stderr or result.stdout)
    return result
