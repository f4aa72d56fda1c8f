"""Limits of a running sandbox, changed in place: cgroup files, its bundle, its quota.

Used when a sandbox is handed out with other limits than it started with: a warm
sandbox claimed by a request, a memory restore (which comes back as dumped). Written
directly, no process started (``runc update`` + ``btrfs qgroup limit`` cost ~35 ms of
process start per claim, on the CPU a burst of claims needs).
"""

from __future__ import annotations

from pathlib import Path

from .. import ids
from ..runtime import bundle, cgroups
from ..storage import btrfs


def apply(state_dir: Path, rootfs: Path, sandbox_id: str, *, cpus: float, memory_mb: int, pids_limit: int,
          writable_mb: int) -> None:
    cgroups.set_limits(ids.cgroup_path(sandbox_id), cpu_quota=bundle.cpu_quota(cpus), cpu_period=bundle.CFS_PERIOD,
                       memory_bytes=memory_mb << 20, pids=pids_limit)
    bundle.set_limits(state_dir, bundle.Limits(cpus, memory_mb, pids_limit))
    btrfs.set_limit(rootfs, writable_mb)
