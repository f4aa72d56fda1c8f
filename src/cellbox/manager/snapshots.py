"""Snapshots: capture (filesystem, or filesystem + memory at one instant), list,
delete, restore into a new identity, and live clone.

The base of ``memstate.MemoryState``: it holds what every memory-state operation
shares (the records, the snapshot records, the per-sandbox locks, the parts table a
restore assembles with). Suspend/resume and crash recovery live in ``memstate.py``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from .. import faults, ids
from ..errors import (
    CellboxError,
    InvalidRequest,
    InvalidState,
    SandboxNotFound,
    SnapshotNotFound,
    SnapshotNotReady,
)
from ..network.egress import EgressControl
from ..network.policy import EgressPolicy
from ..runtime import checkpoint
from ..runtime.runc import Runc
from ..storage import btrfs, rootfs
from . import locks, owner
from .assemble import Assembler
from .records import SandboxRecord, Status
from .snapshot_store import SnapshotRecord, SnapshotStatus, SnapshotStore, SnapshotType
from .sources import RestoreSource, restore_plan
from .tasks import TaskSet

MANIFEST_VERSION = 1
CLONE_TMPFS = Path("/dev/shm/cellbox-clone")
CLONE_PREFIX = ".clone-"


class Snapshots:
    """Snapshot, restore, clone: node-side, on top of ``assemble`` (a restore is an
    assemble from a ``RestoreSource``)."""

    def __init__(self, assembler: Assembler, runc: Runc, egress: EgressControl) -> None:
        self.assembler = assembler
        self.settings = assembler.settings
        self.store = assembler.store
        self.runc = runc
        self.egress = egress
        self.snapshots = SnapshotStore(self.store.db)
        self._locks = locks.LockRegistry()
        self.volumes: Any = None  # manager/volumes.VolumeManager, set by the manager (volumes hook)
        self._background = TaskSet("memory state")

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.get(sandbox_id)

    def get(self, ref: str, namespace: str = "default") -> SandboxRecord:
        """Find a sandbox by ID or by name; 404 if neither matches."""
        rec = self.store.get(ref) if ids.is_id(ref) else None
        if rec is None:
            rec = self.store.get_by_name(namespace, ref)
        if rec is None:
            raise SandboxNotFound(ref)
        return rec

    # -- paths ------------------------------------------------------------------------

    def _state_dir(self, sandbox_id: str) -> Path:
        return self.settings.sandboxes_dir / sandbox_id

    def snapshot_dir(self, snapshot_id: str) -> Path:
        return self.settings.pool / "snapshots" / snapshot_id

    # -- suspend / resume ---------------------------------------------------------------

    async def _freeze_and_capture(self, rec: SandboxRecord, dest: Path, mem_dir: Path | None) -> int:
        """Snapshot rootfs (into ``dest/rootfs``) and memory (into ``mem_dir``) at one instant.

        Returns the size of the memory images. The container is frozen for the whole
        capture, so the two are consistent; it runs on afterwards.
        """
        cid = ids.container(rec.id)
        dest.mkdir(parents=True, exist_ok=True)
        await self.assembler.runtime.settled(cid)  # a lazy restore's pages must all be in first
        await checkpoint.pause(self.runc, cid)
        try:
            faults.hit("capture.after_pause")
            await btrfs.snapshot(rootfs.path(self.settings.pool, rec.id), dest / "rootfs", readonly=True)
            faults.hit("capture.after_rootfs")
            if mem_dir is not None:
                timing = await checkpoint.checkpoint(self.runc, cid, mem_dir, leave_running=True)
                # Shared by every restore of it: out of every sandbox's reach (each
                # restore reads its own retargeted copy, criu_images.retarget).
                mem_dir.chmod(0o700)
                return timing.image_bytes
            return 0
        finally:
            await checkpoint.resume(self.runc, cid)

    def _manifest(self, rec: SandboxRecord, snap_type: SnapshotType) -> dict[str, Any]:
        cfg = json.loads((self._state_dir(rec.id) / "config.json").read_text())
        return {
            "version": MANIFEST_VERSION,
            "snapshot_type": snap_type.value,
            "sandbox_id": rec.id,
            "image": rec.image,
            "image_mb": rec.extra.get("image_mb", 0),
            "resources": {"cpus": rec.cpus, "memory_mb": rec.memory_mb, "disk_mb": rec.disk_mb,
                          "pids_limit": rec.pids_limit},
            "bundle_config": cfg,
            "network_policy": rec.extra.get("network_policy"),
            "volumes": self.volumes.mounts(rec.id) if self.volumes else [],  # volumes hook: by reference
        }

    async def snapshot(self, ref: str, namespace: str = "default",
                       snapshot_type: SnapshotType = SnapshotType.FILESYSTEM) -> SnapshotRecord:
        rec = self.get(ref, namespace)
        if rec.status != Status.RUNNING:
            raise InvalidState(rec.id, rec.status.value, "; only a running sandbox can be snapshotted")
        snap = SnapshotRecord(id=ids.new_id(), namespace=rec.namespace, sandbox_id=rec.id,
                              snapshot_type=snapshot_type, base_image=rec.image)
        snap.source = self._manifest(rec, snapshot_type)
        self.snapshots.insert(snap)
        dest = self.snapshot_dir(snap.id)
        async with self._lock(rec.id):
            prev = rec.status
            rec.status = Status.SNAPSHOTTING
            self.store.update(rec)
            try:
                mem_dir = dest / "mem" if snapshot_type == SnapshotType.MEMORY else None
                image_bytes = await self._freeze_and_capture(rec, dest, mem_dir)
                # What the snapshot keeps alive on disk besides memory: the files the
                # sandbox wrote (its subvolume's qgroup; the image's extents are shared).
                # Counted 0 before, so the snapshot_bytes quota let a tenant pin
                # count x disk_mb with filesystem snapshots: write, snapshot, delete, repeat.
                image_bytes += await btrfs.referenced_bytes(rootfs.path(self.settings.pool, rec.id))
                faults.hit("snapshot.after_capture")
                (dest / "manifest.json").write_text(json.dumps(snap.source))
                (dest / "manifest.json").chmod(0o600)  # its bundle config holds the agent's secret
            except BaseException as exc:
                await self.remove_snapshot_files(dest)
                snap.status, snap.error = SnapshotStatus.FAILED, str(exc)
                self.snapshots.update(snap)
                raise
            finally:
                cur = self.get(rec.id)
                if cur.status == Status.SNAPSHOTTING:
                    cur.status = prev
                    self.store.update(cur)
        snap.status = SnapshotStatus.COMPLETED
        snap.size_bytes = image_bytes
        self.snapshots.update(snap)
        return snap

    def get_snapshot(self, snapshot_id: str, namespace: str | None = None) -> SnapshotRecord:
        snap = self.snapshots.get(snapshot_id)
        if snap is None or (namespace is not None and snap.namespace != namespace):
            raise SnapshotNotFound(snapshot_id)
        return snap

    async def delete_snapshot(self, snapshot_id: str, namespace: str | None = None) -> None:
        snap = self.get_snapshot(snapshot_id, namespace)
        snap.status = SnapshotStatus.DELETING
        self.snapshots.update(snap)
        await self.remove_snapshot_files(self.snapshot_dir(snap.id))
        self.snapshots.delete(snap.id)

    async def remove_snapshot_files(self, dest: Path) -> None:
        await btrfs.delete(dest / "rootfs")
        await asyncio.to_thread(shutil.rmtree, dest, True)

    # -- restore into a new identity -----------------------------------------------------

    def ready_snapshot(self, snapshot_id: str) -> tuple[SnapshotRecord, Path, bool]:
        """A completed snapshot to restore from: its record, its files, whether it has memory."""
        snap = self.get_snapshot(snapshot_id)
        if snap.status != SnapshotStatus.COMPLETED:
            raise SnapshotNotReady(snapshot_id, snap.status.value)
        return snap, self.snapshot_dir(snap.id), snap.snapshot_type == SnapshotType.MEMORY

    async def restore(self, snapshot_id: str, *, namespace: str = "default", name: str | None = None,
                      timeout_secs: int | None = None, sandbox_id: str | None = None,
                      network: EgressPolicy | None = None) -> SandboxRecord:
        """Start a new sandbox from a snapshot, with its resources (its memory too, for a
        memory snapshot). ``network`` replaces the snapshot's egress policy; None keeps it.
        (``lifecycle.create_from_snapshot`` is the create that can change resources.)"""
        if name is not None and (problem := ids.name_problem(name)):
            raise InvalidRequest(problem)
        snap, snap_dir, memory = self.ready_snapshot(snapshot_id)
        plan = restore_plan(snap_dir, snap.source, dict(snap.source["resources"]), memory=memory, network=network)
        return await self.assembler.create(plan, namespace=namespace, name=name, timeout_secs=timeout_secs,
                                           sandbox_id=sandbox_id)

    async def clone(self, ref: str, times: int, namespace: str = "default") -> list[SandboxRecord | CellboxError]:
        """N running copies of a running sandbox (files and memory), each its own identity."""
        if not 1 <= times <= 64:
            raise InvalidRequest("times must be between 1 and 64")
        rec = self.get(ref, namespace)
        if rec.status != Status.RUNNING:
            raise InvalidState(rec.id, rec.status.value, "; only a running sandbox can be cloned")
        if self.volumes is not None:
            self.volumes.check_clone(rec)  # volumes hook: a clone must not be a second writer
        # Scratch names carry the cloning process and the source, so a crash's leftovers
        # are found and removed at the next start (remove_clone_scratch).
        tmp_id = f"{owner.this_process().replace(':', '_')}-{rec.id}-{ids.new_id()}"
        tmp = self.settings.pool / "snapshots" / f"{CLONE_PREFIX}{tmp_id}"
        # The memory images of a clone live only until the copies are up: keep them in
        # RAM (tmpfs), which halves the dump time of a 256 MiB sandbox (650 -> ~300 ms).
        mem_dir = CLONE_TMPFS / tmp_id
        try:
            async with self._lock(rec.id):
                await self._freeze_and_capture(rec, tmp, mem_dir)
            faults.hit("clone.after_capture")
            manifest = self._manifest(rec, SnapshotType.MEMORY)
            sem = asyncio.Semaphore(2)

            async def one() -> SandboxRecord | CellboxError:
                async with sem:
                    plan = restore_plan(tmp, manifest, dict(manifest["resources"]), memory=True)
                    assert isinstance(plan.source, RestoreSource)
                    plan.source.mem_dir = mem_dir  # on tmpfs, not in the capture's dir
                    try:
                        return await self.assembler.create(plan, namespace=rec.namespace, name=None,
                                                           timeout_secs=rec.timeout_secs)
                    except CellboxError as exc:
                        return exc

            return list(await asyncio.gather(*[one() for _ in range(times)]))
        finally:
            await self.remove_snapshot_files(tmp)
            await asyncio.to_thread(shutil.rmtree, mem_dir, True)
