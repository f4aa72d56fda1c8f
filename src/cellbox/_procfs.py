"""Process liveness from /proc: the one reader of ``/proc/PID/stat`` and ``cgroup``.

Why one module: liveness was read four ways (``kill(pid, 0)`` + stat, stat alone,
stat + cgroup, stat field 22), each with its own idea of a zombie. A PID alone is not
an identity (PIDs are recycled), so callers that keep one across time pair it with
its start time (``start_time``) or its cgroup (``in_cgroup``), runc's ``hasInit`` idea.
No subprocess, no signal: cheap enough for the once-a-second sweep over every sandbox.
"""

from __future__ import annotations


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (exists and is neither a zombie nor dead)."""
    if not pid:
        return False
    fields = _stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] not in ("Z", "X")


def start_time(pid: int) -> str | None:
    """Start time of a live ``pid`` in clock ticks (stat field 22), None if gone or a zombie."""
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X") or len(fields) < 20:
        return None
    return fields[19]


def in_cgroup(pid: int | None, cgroup_path: str) -> bool:
    """Whether ``pid`` is alive and in ``cgroup_path`` (a recycled PID is in another one)."""
    if not alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return any(line.rstrip("\n").endswith(":" + cgroup_path) for line in f)
    except OSError:
        return False
