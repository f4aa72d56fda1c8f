"""Which process manages a sandbox record, decided from the kernel (PID + start time).

Every record is stamped with the identity of the process that created it
(``"<pid>:<start time in clock ticks>"``, runc's ``hasInit`` idea: a recycled PID has a
different start time). Several processes may share one data directory (a server, a
test's in-process manager, a restarted server), so the background work of a server
(reconcile, timeouts, refresh) touches only records whose creator is itself or is gone:
a live manager's half-built or half-destroyed sandbox is that manager's business.
"""

from __future__ import annotations

import os
from functools import lru_cache

from .._procfs import start_time as _start_time


@lru_cache(maxsize=1)
def _this_process(pid: int) -> str:
    return f"{pid}:{_start_time(pid) or 0}"


def this_process() -> str:
    """The identity of the calling process (recomputed after a fork)."""
    return _this_process(os.getpid())


def is_alive(owner: str | None) -> bool:
    """Whether the process ``owner`` names still runs (the same process, not a PID reuse)."""
    if not owner:
        return False
    pid, _, start = owner.partition(":")
    if not pid.isdigit():
        return False
    return _start_time(int(pid)) == start


def managed_here(owner: str | None) -> bool:
    """Whether this process may do background work on a record created by ``owner``:
    it made it itself, or its creator is gone (crashed or stopped) and we adopt it."""
    return owner == this_process() or not is_alive(owner)
