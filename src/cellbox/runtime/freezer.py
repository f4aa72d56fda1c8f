"""Freeze and thaw a sandbox's cgroup directly, polling every millisecond.

Why (issue 15, memory state): a snapshot or clone froze the container with ``runc
pause`` and thawed it with ``runc resume``: a runc process start each (~10-30 ms on
this host) for two writes to a cgroup file. runc keeps no pause state of its own (it
reads the freezer back), so writing the freezer here is the same operation. The
freeze completes in milliseconds; polling at 1 ms catches it.

Not used before a *suspend*: CRIU takes an already FROZEN cgroup as is (skipping its
own 100 ms freezer poll, ``criu/seize.c``), but then failed to seize a task frozen in
D state (docs/ARCHITECTURE.md, memory state).

Both layouts: v1 ``freezer.state`` (this host), v2 ``cgroup.freeze`` + ``cgroup.events``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
POLL = 0.001  # seconds between looks at the freezer's state
TIMEOUT = 10.0  # CRIU's own default for a freeze (opts.timeout 10 s)


class FreezeTimeout(RuntimeError):
    """The cgroup did not reach FROZEN in time (a task stuck in uninterruptible sleep)."""


def _v1(cgroup_path: str) -> Path:
    return ROOT / "freezer" / cgroup_path.lstrip("/") / "freezer.state"


def _v2(cgroup_path: str) -> Path:
    return ROOT / cgroup_path.lstrip("/")


def available(cgroup_path: str) -> bool:
    return _v1(cgroup_path).exists() or (_v2(cgroup_path) / "cgroup.freeze").exists()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def is_frozen(cgroup_path: str) -> bool:
    v1 = _v1(cgroup_path)
    if v1.exists():
        return v1.read_text().strip() == "FROZEN"
    return "frozen 1" in (_v2(cgroup_path) / "cgroup.events").read_text()


async def freeze(cgroup_path: str, timeout: float = TIMEOUT) -> float:
    """Freeze every task of the cgroup; returns the seconds it took. On a timeout the
    cgroup is thawed again and ``FreezeTimeout`` raised."""
    t0 = time.perf_counter()
    v1 = _v1(cgroup_path)
    if v1.exists():
        _write(v1, "FROZEN")
    else:
        _write(_v2(cgroup_path) / "cgroup.freeze", "1")
    while not is_frozen(cgroup_path):
        if time.perf_counter() - t0 > timeout:
            thaw(cgroup_path)
            raise FreezeTimeout(f"cgroup {cgroup_path} did not freeze within {timeout:g}s")
        if v1.exists():
            _write(v1, "FROZEN")  # v1 may need the write repeated for tasks forked meanwhile
        await asyncio.sleep(POLL)
    return time.perf_counter() - t0


def thaw(cgroup_path: str) -> None:
    v1 = _v1(cgroup_path)
    try:
        if v1.exists():
            _write(v1, "THAWED")
        else:
            _write(_v2(cgroup_path) / "cgroup.freeze", "0")
    except FileNotFoundError:
        pass  # the cgroup is gone with its tasks: nothing left to thaw
