"""Volumes of a project: create, version, fork, delete; mount into sandboxes and out.

The rules, in one place:

* **One writer, many readers.** A volume is mounted read-write by at most one live
  sandbox (running, suspended, being restored) at a time; read-only by any number. A
  second writer gets ``409 VOLUME_IN_USE`` naming the sandbox that holds it. Who holds
  what is read from the sandboxes' own records (``volume_store.py``), under one lock.
* **By reference.** Suspend/resume, memory snapshots and clones keep the *same*
  volume mounted at the same path (never a copy): CRIU re-binds the sandbox's
  host-side mount of it (``volume_mounts.py``). A memory snapshot refers to its
  volumes; restoring it with a read-write volume another sandbox writes is a 409.
  A clone of a sandbox with a read-write volume would be a second writer: 409 before
  anything is dumped (detach it or mount it read-only first). Read-only ones are shared.
* **Versions** are read-only btrfs snapshots (O(1)); a mount of a version is read-only;
  a fork is a new writable volume from a head or a version (O(1)).
* A mounted volume (by any live sandbox) cannot be deleted (409), nor a mounted version.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import ids
from ..errors import CommandFailed, Conflict, InvalidRequest, NotFound, QuotaExceeded
from ..runtime import bundle, checkpoint, userns, volmount
from ..storage import rootfs
from ..storage import volumes as disk
from . import volume_mounts as vm
from .records import SandboxRecord, Status
from .volume_store import VersionRecord, VolumeRecord, VolumeStore

if TYPE_CHECKING:
    from .assemble import Build

log = logging.getLogger(__name__)
DEFAULT_SIZE_MB = 1024
MAX_SIZE_MB = 1 << 20  # 1 TiB; the pool's free space is the real bound (a full pool is a 507)


class VolumeManager:
    def __init__(self, manager: Any) -> None:  # the SandboxManager (lifecycle.py) that owns it; Any keeps lifecycle -> volumes one-way
        self.m = manager
        self.store = VolumeStore(manager.store.db)
        self._lock = asyncio.Lock()  # writer checks and the records they guard

    # -- catalog ----------------------------------------------------------------------------

    def get(self, namespace: str, ref: str) -> VolumeRecord:
        """By name or ID, in ``namespace`` only: another project's volume is a 404."""
        rec = self.store.get_by_name(namespace, ref)
        if rec is None and (by_id := self.store.get(ref)) is not None and by_id.namespace == namespace:
            rec = by_id
        if rec is None:
            raise NotFound(f"volume {ref!r} not found", code="VOLUME_NOT_FOUND")
        return rec

    def list(self, namespace: str) -> builtins.list[VolumeRecord]:
        return self.store.list(namespace)

    async def create(self, namespace: str, name: str, size_mb: int | None, *, limit_bytes: int | None = None,
                     source: Path | None = None, forked_from: dict[str, Any] | None = None) -> VolumeRecord:
        """A new volume (empty, or a fork of ``source``), within the project's ``volume_bytes``."""
        if problem := ids.name_problem(name):
            raise InvalidRequest(f"name: {problem}")
        size = DEFAULT_SIZE_MB if size_mb is None else size_mb
        if not 1 <= size <= MAX_SIZE_MB:
            raise InvalidRequest(f"size_mb must be between 1 and {MAX_SIZE_MB}, got {size}")
        async with self._lock:
            if limit_bytes is not None:
                used = sum(v.size_mb for v in self.store.list(namespace)) << 20
                if used + (size << 20) > limit_bytes:
                    raise QuotaExceeded(f"project {namespace!r}: quota volume_bytes is {limit_bytes}, {used} "
                                        f"in use; a {size} MiB volume would pass it")
            rec = VolumeRecord(id=ids.new_id(), namespace=namespace, name=name, size_mb=size,
                               forked_from=forked_from)
            try:
                self.store.insert(rec)
            except sqlite3.IntegrityError:
                raise Conflict(f"a volume named {name!r} already exists", code="VOLUME_NAME_TAKEN") from None
        try:
            if source is None:
                await disk.create(self.m.settings.pool, rec.id, size)
            else:
                await disk.fork(self.m.settings.pool, source, rec.id, size)
        except BaseException as exc:
            self.store.delete(rec.id)
            from .assemble import no_space

            full = no_space(exc) if isinstance(exc, (OSError, CommandFailed)) else None
            if full is not None:
                raise full from exc
            raise
        return rec

    async def fork(self, namespace: str, ref: str, name: str, version_id: str | None, size_mb: int | None,
                   *, limit_bytes: int | None = None) -> VolumeRecord:
        src = self.get(namespace, ref)
        path = disk.head(self.m.settings.pool, src.id)
        if version_id is not None:
            self.version(src, version_id)
            path = disk.version(self.m.settings.pool, src.id, version_id)
        return await self.create(namespace, name, size_mb if size_mb is not None else src.size_mb,
                                 limit_bytes=limit_bytes, source=path,
                                 forked_from={"volume_id": src.id, "version_id": version_id})

    async def delete(self, namespace: str, ref: str) -> None:
        rec = self.get(namespace, ref)
        async with self._lock:
            if held := self.holders(rec.id):
                raise Conflict(f"volume {rec.name!r} is mounted by {_names(held)}: detach it (or delete "
                               "those sandboxes) first", code="VOLUME_IN_USE")
            self.store.delete(rec.id)  # first: a half-removed volume is never mountable
        await disk.remove(self.m.settings.pool, rec.id)

    async def snapshot(self, namespace: str, ref: str, message: str = "") -> VersionRecord:
        """A read-only version of the volume's head as it is now (O(1))."""
        vol = self.get(namespace, ref)
        ver = VersionRecord(id=ids.new_id(), volume_id=vol.id, namespace=namespace, message=message)
        await disk.snapshot(self.m.settings.pool, vol.id, ver.id)
        self.store.insert_version(ver)
        return ver

    def version(self, vol: VolumeRecord, version_id: str) -> VersionRecord:
        ver = self.store.get_version(version_id)
        if ver is None or ver.volume_id != vol.id:
            raise NotFound(f"volume {vol.name!r} has no version {version_id!r}", code="VOLUME_VERSION_NOT_FOUND")
        return ver

    def versions(self, namespace: str, ref: str) -> builtins.list[VersionRecord]:
        return self.store.versions(self.get(namespace, ref).id)

    async def delete_version(self, namespace: str, ref: str, version_id: str) -> None:
        vol = self.get(namespace, ref)
        self.version(vol, version_id)
        async with self._lock:
            if held := [h for h in self.holders(vol.id) if h[1].get("version_id") == version_id]:
                raise Conflict(f"version {version_id} is mounted by {_names(held)}", code="VOLUME_IN_USE")
            self.store.delete_version(version_id)
        await disk.remove_version(self.m.settings.pool, vol.id, version_id)

    async def used_bytes(self, vol: VolumeRecord) -> int:
        return await disk.used_bytes(self.m.settings.pool, vol.id)

    def holders(self, volume_id: str) -> builtins.list[tuple[SandboxRecord, dict[str, Any]]]:
        """Every live sandbox's mount of ``volume_id`` (suspended ones hold theirs too)."""
        out = []
        for sandbox_id, mount in self.store.live_mounts(volume_id):
            if (rec := self.m.store.get(sandbox_id)) is not None:
                out.append((rec, mount))
        return out

    def mounts(self, sandbox_id: str) -> builtins.list[dict[str, Any]]:
        """The sandbox's mounts (for a snapshot's manifest: restored by reference)."""
        return self.store.mounts(sandbox_id)

    # -- mounts into sandboxes ------------------------------------------------------------------

    def _resolve(self, rec: SandboxRecord, spec: vm.MountSpec, mounts: builtins.list[dict[str, Any]]) -> dict[str, Any]:
        """The mount ``spec`` asks for, checked against the one-writer rule; 404/409/400."""
        vol = self.get(rec.namespace, spec.volume)
        if spec.version_id is not None:
            self.version(vol, spec.version_id)
        if any(m["volume_id"] == vol.id and m.get("version_id") == spec.version_id
               and m["read_only"] == spec.read_only for m in mounts):
            raise InvalidRequest(f"volume {vol.name!r} is already mounted in sandbox {rec.id}",
                                 code="MOUNT_PATH_IN_USE")
        mount = {"volume_id": vol.id, "name": vol.name, "mount_path": spec.mount_path,
                 "read_only": spec.read_only, "version_id": spec.version_id, "key": vm.next_key(mounts)}
        if not spec.read_only:
            self._check_writer(mount, rec.id)
        return mount

    def _check_writer(self, mount: dict[str, Any], sandbox_id: str) -> None:
        for other, m in self.holders(mount["volume_id"]):
            if other.id != sandbox_id and not m["read_only"]:
                raise Conflict(f"volume {mount['name']!r} is mounted read-write by sandbox {other.id} at "
                               f"{m['mount_path']}; a volume has one writer at a time: mount it read_only, "
                               "or detach it there first", code="VOLUME_IN_USE")

    def _source(self, mount: dict[str, Any]) -> Path:
        pool = self.m.settings.pool
        if mount.get("version_id"):
            return disk.version(pool, mount["volume_id"], mount["version_id"])
        return disk.head(pool, mount["volume_id"])

    def _base(self, rec: SandboxRecord, cfg: dict[str, Any] | None = None) -> int | None:
        """The sandbox's id range (None: no user namespace), from its bundle."""
        if cfg is None:
            cfg = json.loads((self.m.settings.sandboxes_dir / rec.id / "config.json").read_text())
        return userns.host_base(self.m.settings.subnet, rec.ip) if bundle.has_userns(cfg) and rec.ip else None

    async def _host_mount(self, rec: SandboxRecord, mount: dict[str, Any], base: int | None) -> Path:
        data = self.m.settings.data_dir
        top = data / "volmounts"
        top.mkdir(mode=0o711, exist_ok=True)
        sdir = vm.host_dir(data, rec.id)
        sdir.mkdir(mode=0o700, exist_ok=True)
        if base is not None:  # CRIU opens the host mount from inside the sandbox's namespace
            userns.restrict(sdir, base)
        target = vm.host_path(data, rec.id, mount["key"])
        await asyncio.to_thread(volmount.host_mount, self._source(mount), target, base, mount["read_only"])
        return target

    def _mount_point(self, sandbox_id: str, paths: builtins.list[str]) -> None:
        rootfs.prepare_mount_points(rootfs.path(self.m.settings.pool, sandbox_id), paths)

    def precheck(self, namespace: str, specs: builtins.list[vm.MountSpec]) -> None:
        """A create's ``file_systems`` before anything is made: unknown volume or version
        404, a read-write mount of a volume someone writes 409, twice the same 400."""
        seen: set[tuple[str, str | None, bool]] = set()
        for spec in specs:
            vol = self.get(namespace, spec.volume)
            if spec.version_id is not None:
                self.version(vol, spec.version_id)
            if (vol.id, spec.version_id, spec.read_only) in seen:
                raise InvalidRequest(f"file_systems: volume {vol.name!r} is listed twice", code="MOUNT_PATH_IN_USE")
            seen.add((vol.id, spec.version_id, spec.read_only))
            if not spec.read_only:
                self._check_writer({"volume_id": vol.id, "name": vol.name}, "")

    async def attach_or_destroy(self, rec: SandboxRecord, specs: builtins.list[vm.MountSpec]) -> SandboxRecord:
        """A create's ``file_systems``, mounted before the sandbox is handed out; if one
        cannot be, the sandbox is destroyed (one without its volumes would be a trap)."""
        try:
            for spec in specs:
                rec = await self.attach(rec, spec)
        except BaseException:
            await self.m.destroy(rec.id, rec.namespace, reason="startup_failed")
            raise
        return rec

    async def attach(self, rec: SandboxRecord, spec: vm.MountSpec) -> SandboxRecord:
        """Mount a volume into a running sandbox (the mount is there when this returns).

        The mount's row is claimed first (the one-writer check, atomic across
        processes), then the mount is made; a failure gives the row back."""
        async with self.m.memory._lock(rec.id), self._lock:  # no dump while the mounts change
            rec = self._running(rec)
            mounts = self.store.mounts(rec.id)
            vm.check_paths([m["mount_path"] for m in mounts] + [spec.mount_path])
            mount = self._resolve(rec, spec, mounts)
            self._check_criu_config(rec)
            self._claim(rec.id, [*mounts, mount])
            try:
                target = await self._host_mount(rec, mount, self._base(rec))
                try:
                    self._mount_point(rec.id, [spec.mount_path])
                    assert rec.init_pid
                    await asyncio.to_thread(volmount.run, volmount.Job(
                        "attach", rec.init_pid, spec.mount_path, str(target), spec.read_only))
                except BaseException:
                    await asyncio.to_thread(volmount.host_unmount, target)
                    raise
            except volmount.MountError as exc:
                self.store.set_mounts(rec.id, mounts)
                raise Conflict(f"could not mount {mount['name']!r} at {spec.mount_path}: {exc}",
                               code="MOUNT_FAILED") from None
            except BaseException:
                self.store.set_mounts(rec.id, mounts)
                raise
            return self._save(rec, [*mounts, mount])

    def _claim(self, sandbox_id: str, mounts: builtins.list[dict[str, Any]]) -> None:
        if (held := self.store.claim(sandbox_id, mounts)) is not None:
            other_id, m = held
            raise Conflict(f"volume {m['name']!r} is mounted read-write by sandbox {other_id} at "
                           f"{m['mount_path']}; a volume has one writer at a time: mount it read_only, "
                           "or detach it there first", code="VOLUME_IN_USE")

    async def detach(self, rec: SandboxRecord, mount_path: str) -> SandboxRecord:
        async with self.m.memory._lock(rec.id), self._lock:
            rec = self._running(rec)
            mounts = self.store.mounts(rec.id)
            mount = next((m for m in mounts if m["mount_path"] == mount_path), None)
            if mount is None:
                raise NotFound(f"sandbox {rec.id} has no volume at {mount_path!r}", code="MOUNT_NOT_FOUND")
            assert rec.init_pid
            dev = volmount.subvolume_dev(self._source(mount))
            try:
                await asyncio.to_thread(volmount.run, volmount.Job("detach", rec.init_pid, mount_path,
                                                                   expect_dev=dev))
            except volmount.MountError as exc:
                code = "VOLUME_BUSY" if "busy" in str(exc) else "MOUNT_FAILED"
                raise Conflict(f"could not unmount {mount_path}: {exc}", code=code) from None
            await asyncio.to_thread(volmount.host_unmount, vm.host_path(self.m.settings.data_dir, rec.id,
                                                                        mount["key"]))
            return self._save(rec, [m for m in mounts if m is not mount])

    def _running(self, rec: SandboxRecord) -> SandboxRecord:
        rec = self.m.get(rec.id)
        if rec.status != Status.RUNNING or not rec.init_pid:
            raise Conflict(f"sandbox {rec.id} is {rec.status.value}; volumes attach to and detach from "
                           "running sandboxes", code="SANDBOX_NOT_RUNNING")
        return rec

    def _check_criu_config(self, rec: SandboxRecord) -> None:
        cfg = json.loads((self.m.settings.sandboxes_dir / rec.id / "config.json").read_text())
        want = str(vm.criu_config_path(self.m.settings.sandboxes_dir / rec.id))
        if cfg.get("annotations", {}).get(checkpoint.CRIU_CONFIG_ANNOTATION) != want:
            raise Conflict(f"sandbox {rec.id} was started before volumes existed (it could not be suspended "
                           "with one); create a new sandbox", code="VOLUMES_UNSUPPORTED")

    def _save(self, rec: SandboxRecord, mounts: builtins.list[dict[str, Any]]) -> SandboxRecord:
        self.store.set_mounts(rec.id, mounts)  # (attach: already claimed; the same rows)
        vm.write_criu_config(self.m.settings.sandboxes_dir / rec.id, self.m.settings.data_dir, rec.id, mounts)
        rec = self.m.get(rec.id)
        rec.extra["volumes"] = mounts  # the copy SandboxInfo.file_systems is rendered from
        self.m.store.update(rec)
        return rec

    # -- hooks in the sandbox lifecycle (manager/sandboxes.py, memstate.py) ---------------------

    async def teardown(self, sandbox_id: str) -> None:
        """Take down the sandbox's host-side volume mounts (never a recursive removal)."""
        self.forget(sandbox_id)
        sdir = vm.host_dir(self.m.settings.data_dir, sandbox_id)
        if not sdir.is_dir():
            return
        for key in os.listdir(sdir):
            await asyncio.to_thread(volmount.host_unmount, sdir / key)
        sdir.rmdir()

    async def sweep(self) -> builtins.list[str]:
        """At start: take down host-side mounts (and rows) of sandboxes whose record is
        final or gone (a crash between teardown steps; a process without this code
        ending one). Returns the sandbox IDs cleaned."""
        top = self.m.settings.data_dir / "volmounts"
        done = []
        for sandbox_id in os.listdir(top) if top.is_dir() else []:
            rec = self.m.store.get(sandbox_id)
            if rec is None or rec.status.is_final:
                await self.teardown(sandbox_id)
                done.append(sandbox_id)
        return done

    def forget(self, sandbox_id: str) -> None:
        """Drop an ended sandbox's mount rows (they no longer hold anything anyway)."""
        self.store.set_mounts(sandbox_id, [])

    def check_clone(self, rec: SandboxRecord) -> None:
        for m in self.store.mounts(rec.id):
            if not m["read_only"]:
                raise Conflict(f"sandbox {rec.id} has volume {m['name']!r} mounted read-write at "
                               f"{m['mount_path']}; a clone would be a second writer: detach it (or mount it "
                               "read_only) before cloning", code="VOLUME_IN_USE")

    async def make_part(self, b: "Build") -> None:
        """The assembler's ``volumes`` part (after the bundle): the sandbox's own CRIU
        config, and for a memory image the volumes it was dumped with. Its inverse is
        :meth:`teardown` (the part's remove)."""
        memory = bool(getattr(b.source, "memory", False))
        manifest = getattr(b.source, "manifest", None) or {}
        assert b.root is not None
        await self.prepare_restore(b.rec, manifest.get("volumes"), b.cfg, b.root, memory)
        bundle.write(b.state_dir, b.cfg)  # with the per-sandbox CRIU config named in it

    async def prepare_restore(self, rec: SandboxRecord, mounts: builtins.list[dict[str, Any]] | None,
                              cfg: dict[str, Any], root: Path, memory: bool) -> None:
        """Before ``runc restore`` (or start) of a snapshot into ``rec``: its own CRIU config,
        and for a memory image the volumes it was dumped with, by reference."""
        state_dir = self.m.settings.sandboxes_dir / rec.id
        cfg.setdefault("annotations", {})[checkpoint.CRIU_CONFIG_ANNOTATION] = str(vm.criu_config_path(state_dir))
        mounts = list(mounts or []) if memory else []  # a filesystem snapshot is files only
        vm.write_criu_config(state_dir, self.m.settings.data_dir, rec.id, mounts)
        if not mounts:
            return
        async with self._lock:
            for m in mounts:
                vol = self.store.get(m["volume_id"])
                if vol is None or (m.get("version_id") and self.store.get_version(m["version_id"]) is None):
                    raise Conflict(f"the snapshot's volume {m['name']!r} (or its version) was deleted",
                                   code="VOLUME_GONE")
                # A memory image can reach another project (an image registered from it):
                # its volumes never do.
                if vol.namespace != rec.namespace:
                    raise Conflict(f"the snapshot mounts volume {m['name']!r}, which is not in project "
                                   f"{rec.namespace!r}", code="VOLUME_GONE")
            self._claim(rec.id, mounts)  # holds the volumes from now on (the record is live)
            rec.extra["volumes"] = mounts
        base = self._base(rec, cfg)
        for m in mounts:
            await self._host_mount(rec, m, base)
        rootfs.prepare_mount_points(root, [m["mount_path"] for m in mounts])

    async def prepare_resume(self, rec: SandboxRecord) -> None:
        """Before a resume: the host-side mounts (gone after a host reboot) and mount points."""
        mounts = self.store.mounts(rec.id)
        if not mounts:
            return
        base = self._base(rec)
        for m in mounts:
            await self._host_mount(rec, m, base)
        self._mount_point(rec.id, [m["mount_path"] for m in mounts])


def _names(held: builtins.list[tuple[SandboxRecord, dict[str, Any]]]) -> str:
    return ", ".join(f"sandbox {r.id} (at {m['mount_path']}, {'ro' if m['read_only'] else 'rw'})" for r, m in held)
