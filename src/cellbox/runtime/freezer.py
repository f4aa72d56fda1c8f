"""Freeze and thaw a sandbox's cgroup directly, polling every millisecond.

Why (issue 15, memory state): a snapshot or clone froze the container with ``runc
pause`` and thawed it with ``runc resume``: a runc process start each (~10-30 ms on
this host) for two writes to a cgroup file. runc keeps no pause state of its own (it
reads the freezer back), so writing the freezer here is the same operation. The
freeze completes in milliseconds; polling at 1 ms catches it.

A task frozen while it waits for a vfork child (glibc's ``posix_spawn``, Python's
``subprocess``, a shell's ``vfork``) cannot be dumped: CRIU seizes the child, the parent
goes back to waiting for a child that will never exec, and CRIU waits out its 10 s
timeout ("Unseizable non-zombie ... state D"; a pre-booted image's build failed so in
CI, and pre-freezing before a suspend was reverted for it once). The window is the
microseconds between a ``vfork`` and its ``exec``, so :func:`freeze` looks for such a
task once the cgroup is frozen, and if there is one thaws, lets it through, and
freezes again.

Both layouts: v1 ``freezer.state`` (this host), v2 ``cgroup.freeze`` + ``cgroup.events``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ..errors import Conflict

ROOT = Path("/sys/fs/cgroup")
POLL = 0.001  # seconds between looks at the freezer's state
TIMEOUT = 10.0  # CRIU's own default for a freeze (opts.timeout 10 s)
VFORK_BACKOFF = 0.002  # seconds thawed, for a vfork child to reach its exec
# /proc/TID/wchan of a task waiting for its vfork child: wait_for_vfork_done, inlined
# into kernel_clone on recent kernels (6.18 here), _do_fork on older ones.
VFORK_WCHANS = frozenset({"kernel_clone", "wait_for_vfork_done", "_do_fork", "do_fork"})


class FreezeTimeout(Conflict):
    """The cgroup did not reach FROZEN in time (a task stuck in uninterruptible sleep,
    or in a vfork whose child never execs): the sandbox runs on, and the client is told
    why its snapshot or suspend did not happen (409, not a 500)."""

    code = "FREEZE_TIMEOUT"


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


def _tids(cgroup_path: str) -> list[str]:
    """Every thread of the cgroup (v1 ``tasks``, v2 ``cgroup.threads``)."""
    v1 = _v1(cgroup_path).with_name("tasks")
    path = v1 if v1.exists() else _v2(cgroup_path) / "cgroup.threads"
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def in_vfork(cgroup_path: str) -> list[int]:
    """Threads of the cgroup waiting for a vfork child to exec (from their wchan)."""
    found = []
    for tid in _tids(cgroup_path):
        try:
            with open(f"/proc/{tid}/wchan") as f:
                if f.read().strip() in VFORK_WCHANS:
                    found.append(int(tid))
        except OSError:
            continue  # exited meanwhile
    return found


async def _freeze_once(cgroup_path: str, deadline: float) -> bool:
    """Write FROZEN and wait for it; False when the deadline passed first."""
    v1 = _v1(cgroup_path)
    if v1.exists():
        _write(v1, "FROZEN")
    else:
        _write(_v2(cgroup_path) / "cgroup.freeze", "1")
    while not is_frozen(cgroup_path):
        if time.perf_counter() > deadline:
            return False
        if v1.exists():
            _write(v1, "FROZEN")  # v1 may need the write repeated for tasks forked meanwhile
        await asyncio.sleep(POLL)
    return True


async def freeze(cgroup_path: str, timeout: float | None = None) -> float:
    """Freeze every task of the cgroup, none of them caught inside a vfork; returns the
    seconds it took. On a timeout the cgroup is thawed again and ``FreezeTimeout``
    raised."""
    timeout = TIMEOUT if timeout is None else timeout
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        if not await _freeze_once(cgroup_path, deadline):
            thaw(cgroup_path)
            raise FreezeTimeout(f"the sandbox's processes did not freeze within {timeout:g}s "
                                "(one is stuck in uninterruptible sleep); it runs on unchanged")
        caught = in_vfork(cgroup_path)
        if not caught:
            return time.perf_counter() - t0
        thaw(cgroup_path)
        if time.perf_counter() > deadline:
            raise FreezeTimeout(f"the sandbox's processes could not be frozen within {timeout:g}s: "
                                f"{len(caught)} stayed in vfork (a child that does not exec), which "
                                "cannot be checkpointed; it runs on unchanged")
        await asyncio.sleep(VFORK_BACKOFF)


def thaw(cgroup_path: str) -> None:
    v1 = _v1(cgroup_path)
    try:
        if v1.exists():
            _write(v1, "THAWED")
        else:
            _write(_v2(cgroup_path) / "cgroup.freeze", "0")
    except FileNotFoundError:
        pass  # the cgroup is gone with its tasks: nothing left to thaw
