"""Running host commands: one helper so every call has a timeout and a uniform error.

Host tools (runc, btrfs, ip, nft, criu) are the kernel-facing edge of cellbox; their
failures are translated here, once, into :class:`~cellbox.errors.CommandFailed`.
"""

from __future__ import annotations

import asyncio
import subprocess
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
) -> Result:
    """Run ``argv`` to completion and return its output; raise ``CommandFailed`` on error."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
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
