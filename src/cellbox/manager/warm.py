"""A pool of pre-booted sandboxes of the default image, handed out on create.

Why: a cold create costs ~10 ms of storage and network set-up, ~45 ms of ``runc run``
and ~50-70 ms until the agent's Python is up; the hosted leaders do not boot on the
hot path either. A warm sandbox is complete and running; claiming one only applies
the request's limits (``runc update``, ~10 ms, and the disk quota, ~2 ms) and
rewrites its record. Its ID, hostname, netns and rootfs were all made for it, so the
"one ID keys everything" rule holds. bench/start.py measures both paths side by side.

Warm sandboxes are records in the reserved namespace ``WARM_NAMESPACE``, invisible to
listings; the pool refills in the background after each claim. They are torn down
when the manager stops (they are cheap to rebuild, and a restart may bring new code).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _proc, ids
from ..storage import btrfs, rootfs
from .records import SandboxRecord, Status, now_ms

if TYPE_CHECKING:
    from .sandboxes import CreateSpec, SandboxManager

log = logging.getLogger(__name__)
WARM_NAMESPACE = "__warm__"
# Files a first command is likely to read, pre-read into a warm sandbox's page cache.
# Why: btrfs snapshots share data blocks but not inodes, so each sandbox has its own
# page cache; the first `node -v` in a fresh snapshot took ~136 ms, the next ones 47.
PREFAULT = (
    "usr/bin/node", "usr/lib/x86_64-linux-gnu/libnode.so*", "usr/lib/x86_64-linux-gnu/libicu*.so*",
    "usr/lib/x86_64-linux-gnu/libuv.so*", "usr/lib/x86_64-linux-gnu/libstdc++.so*",
    "usr/lib/x86_64-linux-gnu/libcrypto.so*", "usr/lib/x86_64-linux-gnu/libssl.so*",
    "usr/lib/x86_64-linux-gnu/libz.so*", "usr/lib/x86_64-linux-gnu/libbrotli*.so*",
    "usr/lib/x86_64-linux-gnu/libcares.so*", "usr/lib/x86_64-linux-gnu/libnghttp2.so*",
    "usr/lib/x86_64-linux-gnu/libc.so*", "usr/lib/x86_64-linux-gnu/libm.so*", "usr/lib/x86_64-linux-gnu/libgcc_s.so*",
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so*", "usr/bin/python3.11", "usr/bin/bash", "usr/bin/sh", "usr/bin/dash",
)


def prefault(root: Path) -> int:
    """Read the usual first-command files of a sandbox's rootfs (from the host side,
    which shares the sandbox's inodes); returns the bytes read."""
    total = 0
    for pattern in PREFAULT:
        for path in root.glob(pattern):
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        total += len(chunk)
            except OSError:
                continue
    return total


class WarmPool:
    def __init__(self, manager: "SandboxManager", size: int) -> None:
        self.manager = manager
        self.size = size
        self._ready: list[SandboxRecord] = []
        self._building = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Refills are built one at a time: a burst of claims would otherwise start as
        # many cold builds at once, and they would compete with the burst for the CPU.
        self._build_slot = asyncio.Semaphore(1)

    @property
    def ready(self) -> int:
        return len(self._ready)

    def fill(self) -> None:
        """Start building sandboxes until ready + building reaches the pool size."""
        while not self._closed and len(self._ready) + self._building < self.size:
            self._building += 1
            task = asyncio.ensure_future(self._build_one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _build_one(self) -> None:
        from .sandboxes import CreateSpec

        try:
            async with self._build_slot:
                if self._closed:
                    return
                rec = await self.manager.create_cold(CreateSpec(namespace=WARM_NAMESPACE, cpus=float(_host_cpus())))
        except Exception as exc:  # noqa: BLE001 - a failed warm build only means a cold create later
            log.warning("warm pool: building a sandbox failed: %s", exc)
            return
        finally:
            self._building -= 1
        if self._closed:
            await self.manager.destroy(rec.id, WARM_NAMESPACE, reason="pool_closed")
            return
        await asyncio.to_thread(prefault, rootfs.path(self.manager.settings.pool, rec.id))
        self._ready.append(rec)

    def can_serve(self, spec: "CreateSpec") -> bool:
        default = self.manager.settings.default_image
        return bool(self._ready) and spec.image in (None, default, default + ":latest")

    async def claim(self, spec: "CreateSpec", disk_mb: int) -> SandboxRecord | None:
        """Hand out a warm sandbox shaped to ``spec``, or None if none fits."""
        while self._ready:
            rec = self._ready.pop()
            self.fill()
            state = await self.manager.runc.state(ids.container(rec.id))
            if state is None or state.status != "running":
                await self.manager.teardown(rec.id)
                rec.status = Status.FAILED
                self.manager.store.update(rec)
                continue
            try:
                await self._apply_limits(rec.id, spec, disk_mb - rec.extra["image_mb"])
            except Exception as exc:  # noqa: BLE001 - fall back to a cold create
                log.warning("warm pool: applying limits to %s failed: %s", rec.id, exc)
                await self.manager.destroy(rec.id, WARM_NAMESPACE, reason="pool_error")
                continue
            rec.namespace, rec.name = spec.namespace, spec.name
            rec.cpus, rec.memory_mb, rec.disk_mb, rec.pids_limit = spec.cpus, spec.memory_mb, disk_mb, spec.pids_limit
            rec.timeout_secs = spec.timeout_secs
            rec.created_at = now_ms()
            rec.extra["warm"] = True
            return rec
        return None

    async def _apply_limits(self, sandbox_id: str, spec: "CreateSpec", writable_mb: int) -> None:
        from ..runtime.bundle import CFS_PERIOD

        settings = self.manager.settings
        mem = str(spec.memory_mb << 20)
        await _proc.run([
            settings.runc, "--root", str(settings.runc_root), "update",
            "--cpu-quota", str(max(1000, int(spec.cpus * CFS_PERIOD))), "--cpu-period", str(CFS_PERIOD),
            "--memory", mem, "--memory-swap", mem, "--pids-limit", str(spec.pids_limit),
            ids.container(sandbox_id),
        ])
        await btrfs.limit(rootfs.path(settings.pool, sandbox_id), writable_mb)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        while self._ready:
            rec = self._ready.pop()
            try:
                await self.manager.destroy(rec.id, WARM_NAMESPACE, reason="pool_closed")
            except Exception as exc:  # noqa: BLE001
                log.warning("warm pool: destroying %s failed: %s", rec.id, exc)


def _host_cpus() -> int:
    import os

    return os.cpu_count() or 1
