"""Live resize of a running sandbox: CPU, memory and root disk, in place (issue 14 item 1).

Why in place and not a restart: the limits are kernel knobs (cgroup files, the
subvolume's qgroup), so changing them costs three writes and an ioctl and the
sandbox's processes never notice — the same path a warm claim takes
(``limits.apply``). The bundle's ``config.json`` is rewritten too, because
``runc restore`` (resume, clone, restore from a snapshot) applies *its* resources;
the record's resources are what snapshots and clones copy, so the new size survives
all of them.

Tensorlake's wire contract (spec §2.2, §2.4): every accepted resize bumps
``resource_resize.generation`` and reports ``{generation, requested, status,
error_message}``; the SDK polls ``GET`` until its generation is ``succeeded``. Ours
completes before the PATCH answers, so the first poll sees it done.

Refusals change nothing and are 4xx naming the problem: a target outside the host's
range, a disk shrink (a quota below what the subvolume holds would make every write
fail), memory below what the sandbox holds now (anonymous memory and tmpfs, which
cannot be reclaimed without swap: the kernel would OOM-kill its processes), a
project quota it would pass. A kernel write that still fails rolls the old limits
back and is reported as a ``failed`` generation. ``/dev/shm`` follows the memory
(``bundle.shm_kib``, reconfigured from the host by ``storage/shm.py``); one that holds
more than its new size refuses the shrink.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import ids
from ..errors import Conflict, InvalidRequest, QuotaExceeded
from ..runtime import bundle, cgroups
from ..storage import shm
from .records import SandboxRecord, Status
from . import limits

if TYPE_CHECKING:
    from ..auth.door import Door
    from .lifecycle import SandboxManager

log = logging.getLogger(__name__)
MIN_MEMORY_MB = 64
# Headroom kept above the memory a sandbox holds now when it shrinks: its processes
# need some room to go on running (page tables, the agent's next request).
SHRINK_HEADROOM_MB = 32


@dataclass(frozen=True)
class Target:
    """The dimensions a client asked for (None: keep)."""

    cpus: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None

    def wire(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "memory_mb": self.memory_mb, "disk_mb": self.disk_mb}


def host_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20


def memory_in_use_mb(sandbox_id: str) -> int:
    """MiB the sandbox holds that the kernel cannot drop: anonymous memory plus tmpfs
    (``total_rss + total_shmem``, v1; ``anon + shmem``, v2). Page cache is left out:
    a lower limit only makes the kernel reclaim it."""
    rel = ids.cgroup_path(sandbox_id).lstrip("/")
    for stat, keys in ((cgroups.ROOT / "memory" / rel / "memory.stat", ("total_rss", "total_shmem")),
                       (cgroups.ROOT / rel / "memory.stat", ("anon", "shmem"))):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
        return sum(int(fields.get(k, 0)) for k in keys) >> 20
    raise Conflict(f"sandbox {sandbox_id}: its memory cgroup is gone", code="SANDBOX_NOT_RUNNING")


def check(rec: SandboxRecord, target: Target) -> tuple[float, int, int]:
    """The new (cpus, memory_mb, disk_mb), or a 400/409 naming what is wrong."""
    if rec.status != Status.RUNNING:
        raise Conflict(f"sandbox {rec.id} is {rec.status.value}; only a running sandbox can be resized",
                       code="SANDBOX_NOT_RUNNING")
    host_cpus = os.cpu_count() or 1
    cpus = rec.cpus if target.cpus is None else target.cpus
    memory_mb = rec.memory_mb if target.memory_mb is None else target.memory_mb
    disk_mb = rec.disk_mb if target.disk_mb is None else target.disk_mb
    if not 0.01 <= cpus <= host_cpus:
        raise InvalidRequest(f"resources.cpus: must be between 0.01 and {host_cpus} (this host's cores), got {cpus}")
    host = host_memory_mb()
    if not MIN_MEMORY_MB <= memory_mb <= host:
        raise InvalidRequest(f"resources.memory_mb: must be between {MIN_MEMORY_MB} and {host}, got {memory_mb}")
    if disk_mb < rec.disk_mb:
        raise InvalidRequest(f"resources.disk_mb: the root disk can only grow ({rec.disk_mb} MiB now, "
                             f"asked {disk_mb})", code="RESIZE_DISK_SHRINK")
    if memory_mb < rec.memory_mb:
        used = memory_in_use_mb(rec.id)
        if memory_mb < used + SHRINK_HEADROOM_MB:
            raise Conflict(f"resources.memory_mb: the sandbox holds {used} MiB now; it cannot shrink to "
                           f"{memory_mb} MiB (at least {used + SHRINK_HEADROOM_MB} MiB)", code="RESIZE_BELOW_USE")
    return float(cpus), int(memory_mb), int(disk_mb)


def admit(door: "Door | None", rec: SandboxRecord, cpus: float, memory_mb: int, disk_mb: int) -> str | None:
    """Hold the growth against the project's quotas (atomic with creates); the hold's
    ID, or None when nothing grows or there are no quotas. Raises 403 over a limit."""
    if door is None or not (limits := door.store.get_quota(rec.namespace)):
        return None
    grow = (max(0.0, cpus - rec.cpus), max(0, memory_mb - rec.memory_mb), max(0, disk_mb - rec.disk_mb))
    if not any(grow):
        return None
    hold = f"resize-{rec.id}"
    verdict = door.store.admit_resize(rec.namespace, hold, *grow, limits)
    if verdict is not None:
        name, value, use = verdict
        raise QuotaExceeded(f"project {rec.namespace!r}: quota {name} is {value:g}, {use:g} in use; "
                            "this resize would pass it")
    return hold


def _write(manager: "SandboxManager", rec: SandboxRecord, cpus: float, memory_mb: int, disk_mb: int) -> None:
    image_mb = int(rec.extra.get("image_mb", 0))
    asm = manager.assembler
    limits.apply(asm.state_dir(rec.id), asm.storage.rootfs_path(rec.id), rec.id, cpus=cpus, memory_mb=memory_mb,
                 pids_limit=rec.pids_limit, writable_mb=max(16, disk_mb - image_mb))


def _shm(rec: SandboxRecord, size_kib: int) -> None:
    if rec.init_pid:
        shm.resize(rec.init_pid, rec.id, size_kib)


def apply(manager: "SandboxManager", rec: SandboxRecord, cpus: float, memory_mb: int, disk_mb: int) -> str | None:
    """Write the new limits and size /dev/shm to the new memory (``bundle.shm_kib``); on
    failure put the old ones back. Returns an error or None.

    A /dev/shm that must shrink shrinks first: if it holds more than its new size the
    kernel refuses, and the resize is refused (``Conflict``) before anything changed."""
    old_shm = (shm.current_kib(rec.init_pid) if rec.init_pid else None) or bundle.shm_kib(rec.memory_mb)
    new_shm = bundle.shm_kib(memory_mb)
    if new_shm < old_shm:
        try:
            _shm(rec, new_shm)
        except shm.ShmError as exc:
            raise Conflict(f"cannot shrink memory to {memory_mb} MB: {exc} ({new_shm} KiB); "
                           "free some of /dev/shm first") from None
    try:
        _write(manager, rec, cpus, memory_mb, disk_mb)
        if new_shm > old_shm:
            _shm(rec, new_shm)
        return None
    except (OSError, shm.ShmError) as exc:
        problem = f"the kernel refused the new limits: {getattr(exc, 'strerror', None) or exc}"
        log.warning("sandbox %s: resize failed (%s); restoring the old limits", rec.id, problem)
    try:
        _write(manager, rec, rec.cpus, rec.memory_mb, rec.disk_mb)
        if new_shm != old_shm:
            _shm(rec, old_shm)
    except (OSError, shm.ShmError) as exc:  # the cgroup is gone: the sweep finds the dead sandbox
        log.error("sandbox %s: restoring limits after a failed resize failed: %s", rec.id, exc)
    return problem


async def resize(manager: "SandboxManager", door: "Door | None", rec: SandboxRecord, target: Target) -> SandboxRecord:
    """Resize ``rec`` (the caller holds its lock); returns the updated record."""
    cpus, memory_mb, disk_mb = check(rec, target)
    generation = int(rec.extra.get("resource_resize", {}).get("generation", 0)) + 1
    requested = {"cpus": cpus, "memory_mb": memory_mb, "disk_mb": disk_mb}
    hold = admit(door, rec, cpus, memory_mb, disk_mb)
    try:
        problem = apply(manager, rec, cpus, memory_mb, disk_mb)
        if problem is None:
            rec.cpus, rec.memory_mb, rec.disk_mb = cpus, memory_mb, disk_mb
        rec.extra["resource_resize"] = {"generation": generation, "requested": requested,
                                        "status": "failed" if problem else "succeeded", "error_message": problem}
        manager.store.update(rec)
    finally:
        if hold is not None and door is not None:
            door.store.release_hold(hold)
    return rec

