"""Memory state: suspend/resume, snapshots (filesystem or memory), restore, live clone.

All of it is one primitive used two ways: CRIU dumps a sandbox's whole process tree
(agent included, with its captured output, pipes and PTYs) and btrfs snapshots its
root filesystem; a restore starts that tree again, either under the same identity
(resume) or under a new one (restore from snapshot, clone: new ID, rootfs, netns,
address, cgroup).

Rules kept here (design notes §3):
* consistent snapshots: the container is frozen (cgroup freezer) while its root
  filesystem is snapshotted and its memory dumped, so both are from one instant;
* lossless suspend: the dump goes to ``suspend.new`` and is renamed to ``suspend``
  only once complete; a failed dump leaves the sandbox running as it was, a failed
  resume leaves it suspended with its images intact;
* a suspended sandbox costs disk only: no process, no memory, no cgroup (runc removes
  the container at checkpoint). The netns is kept (kernel object, no memory to speak
  of) and remade at resume if a reboot removed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _proc, faults, ids
from .._undo import Undo
from ..errors import CellboxError, Conflict, InternalFailure, InvalidRequest, NotFound
from ..network import netns
from ..network import policy as policy_mod
from ..network.egress import Resolved
from ..network.policy import EgressPolicy
from ..runtime import bundle, checkpoint, criu_images, userns
from ..storage import btrfs, rootfs
from . import agent_client
from . import owner
from .records import SandboxRecord, Status, now_ms
from .snapshot_store import SnapshotRecord, SnapshotStatus, SnapshotStore, SnapshotType

if TYPE_CHECKING:
    from .sandboxes import SandboxManager

log = logging.getLogger(__name__)
MANIFEST_VERSION = 1
CLONE_TMPFS = Path("/dev/shm/cellbox-clone")
CLONE_PREFIX = ".clone-"


class SuspendFailed(Conflict):
    """CRIU could not dump the sandbox (409: its state, not the server, is the problem)."""

    code = "SUSPEND_FAILED"

    def __init__(self, sandbox_id: str, *, stopped: bool = False) -> None:
        what = ("and the sandbox stopped" if stopped else
                "; the sandbox keeps running. Usually a process in it uses something that "
                "cannot be checkpointed (a nested namespace, a traced process, a device)")
        super().__init__(f"sandbox {sandbox_id} could not be suspended {what}".replace(" ;", ";"))


class MemoryState:
    def __init__(self, manager: "SandboxManager") -> None:
        self.m = manager
        self.snapshots = SnapshotStore(manager.store.db)
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # -- paths ------------------------------------------------------------------------

    def _state_dir(self, sandbox_id: str) -> Path:
        return self.m.settings.sandboxes_dir / sandbox_id

    def _snapshot_dir(self, snapshot_id: str) -> Path:
        return self.m.settings.pool / "snapshots" / snapshot_id

    # -- suspend / resume ---------------------------------------------------------------

    async def suspend(self, ref: str, namespace: str = "default") -> SandboxRecord:
        rec = self.m.get(ref, namespace)
        if not rec.name:
            raise InvalidRequest("only named sandboxes can be suspended (ephemeral ones are terminated)",
                                 code="SANDBOX_NOT_NAMED")
        async with self._lock(rec.id):
            rec = self.m.get(rec.id)
            if rec.status == Status.SUSPENDED:
                return rec
            if rec.status != Status.RUNNING:
                raise Conflict(f"sandbox {rec.id} is {rec.status.value}; only a running sandbox can be suspended",
                               code="INVALID_STATE")
            state_dir = self._state_dir(rec.id)
            new = state_dir / "suspend.new"
            shutil.rmtree(new, ignore_errors=True)
            rec.status = Status.SUSPENDING
            self.m.store.update(rec)
            faults.hit("suspend.after_status")
            try:
                faults.hit("suspend.dump")  # :fail = CRIU failing mid-dump
                timing = await self._dump(rec.id, new)
            except BaseException as exc:
                shutil.rmtree(new, ignore_errors=True)
                state = await self.m.runc.state(ids.container(rec.id))
                rec = self.m.get(rec.id)
                # CRIU's log names host paths and internals: it goes to the server's log
                # only; the client and the record get what happened and what it means.
                log.warning("suspend of sandbox %s failed: %s", rec.id, exc)
                if state is not None and state.status in ("running", "paused"):
                    if state.status == "paused":
                        await checkpoint.resume(self.m.runc, ids.container(rec.id))
                    rec.status = Status.RUNNING  # as it was
                    failure = SuspendFailed(rec.id)
                    rec.extra["last_error"] = {"code": failure.code, "message": failure.message, "at": now_ms()}
                else:
                    failure = SuspendFailed(rec.id, stopped=True)
                    rec.status, rec.error = Status.FAILED, failure.message
                    rec.terminated_at, rec.termination_reason = now_ms(), "suspend_failed"
                self.m.store.update(rec)
                if isinstance(exc, Exception):
                    raise failure from None
                raise
            faults.hit("suspend.after_dump")
            if rec.ip:
                await netns.drop_host_connections(rec.ip)
            if bundle.has_userns(json.loads((state_dir / "config.json").read_text())):
                # The netns died with its tasks (runc made it; only its name holds it):
                # remove it now, off the resume path (the hook would, ~70 ms of resume).
                # Its walls stay pinned: the address is kept while suspended.
                await netns.remove_link(rec.id)
            final = state_dir / "suspend"
            shutil.rmtree(final, ignore_errors=True)
            new.rename(final)  # the dump is complete: from here on, resume can use it
            faults.hit("suspend.after_rename")
            rec = self.m.get(rec.id)
            rec.status, rec.init_pid = Status.SUSPENDED, None
            rec.extra.pop("last_error", None)
            rec.extra["suspended_at"] = now_ms()
            rec.extra["suspend_image_bytes"] = timing.image_bytes
            self.m.store.update(rec)
            return rec

    async def _dump(self, sandbox_id: str, images: Path) -> checkpoint.Timing:
        """``runc checkpoint`` into ``images``; a runc error after a dump CRIU finished is
        not a failure: the images are whole and the tasks are gone.

        Seen under load: runc answered "container still running" after CRIU's
        "Dumping finished successfully" (it looked before the init was reaped); the
        sandbox was then reported running with its processes dead and its dump deleted,
        and the sweep failed it and removed its files.
        """
        try:
            return await checkpoint.checkpoint(self.m.runc, ids.container(sandbox_id), images, leave_running=False)
        except Exception as exc:
            if not checkpoint.dump_complete(images):
                raise
            log.warning("suspend %s: runc failed after a complete dump, keeping it: %s", sandbox_id, exc)
            await self.m.runc.destroy(ids.container(sandbox_id))
            return checkpoint.Timing(0.0, checkpoint.dir_bytes(images))

    async def resume(self, ref: str, namespace: str = "default") -> SandboxRecord:
        rec = self.m.get(ref, namespace)
        lock = self._lock(rec.id)
        await lock.acquire()
        handed_over = False
        try:
            rec = self.m.get(rec.id)
            if rec.status == Status.RUNNING:
                return rec
            if rec.status != Status.SUSPENDED:
                raise Conflict(f"sandbox {rec.id} is {rec.status.value}, not suspended", code="INVALID_STATE")
            state_dir = self._state_dir(rec.id)
            images = state_dir / "suspend"
            if not (images / "inventory.img").exists():
                raise InternalFailure(f"sandbox {rec.id} has no complete suspend image")
            userns_bundle = bundle.has_userns(json.loads((state_dir / "config.json").read_text()))
            if userns_bundle:
                # The prestart hook makes the netns at every restore (suspend removed the
                # old one); the idmapped rootfs is still mounted unless the host rebooted.
                assert rec.ip
                rebooted = not os.path.ismount(userns.mount_path(state_dir))
                await asyncio.to_thread(userns.mount_idmapped, rootfs.path(self.m.settings.pool, rec.id),
                                        userns.mount_path(state_dir),
                                        userns.host_base(self.m.settings.subnet, rec.ip))
                if rebooted:  # the port's walls went with the host's nft tables
                    await netns.pin_walls(self.m.settings, rec.id, ipaddress.IPv4Address(rec.ip))
            else:
                rebooted = not netns.exists(rec.id)
                if rebooted:
                    await netns.create(self.m.settings, rec.id, ipaddress.IPv4Address(rec.ip))
            if rebooted:  # the host rebooted: its network (and our nft rules) went with it
                policy = policy_mod.from_wire(rec.extra.get("network_policy"))
                if policy is not None:
                    assert rec.ip
                    await self.m.egress.apply(rec.id, rec.ip, policy)
            cfg = json.loads((state_dir / "config.json").read_text())
            rootfs.prepare_mount_points(rootfs.path(self.m.settings.pool, rec.id), bundle.mount_points(cfg))
            await self.m.volumes.prepare_resume(rec)  # volumes hook
            work = state_dir / f"restore-{int(time.time() * 1000)}"
            lazy = await checkpoint.LazyPages.start(images, work)
            faults.hit("resume.after_lazy_pages")
            try:
                rec.init_pid = await checkpoint.restore(self.m.runc, ids.container(rec.id), state_dir, images,
                                                        work, lazy=lazy)
                faults.hit("resume.after_restore")
                await self.m._wait_agent(rec, work / "restore.log")
                await self._rotate_key(rec, agent_client.key_of(rec))
            except BaseException:
                # Leave it suspended, images intact: a later resume can try again.
                await lazy.kill()
                await self.m.runc.destroy(ids.container(rec.id))
                shutil.rmtree(work, ignore_errors=True)
                raise
            rec.status = Status.RUNNING
            rec.extra["resumed_at"] = now_ms()
            rec.extra["resume_count"] = rec.extra.get("resume_count", 0) + 1
            self.m.store.update(rec)
            # The sandbox answers now; the rest of its memory streams in behind it. The
            # lock stays held until then (images must stay, no dump may start meanwhile).
            task = asyncio.ensure_future(self._finish_lazy(rec.id, lazy, images, work, lock))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            handed_over = True
            return rec
        finally:
            if not handed_over:
                lock.release()

    async def _rotate_key(self, rec: SandboxRecord, old: bytes | None) -> None:
        """Give a restored agent a secret of its own (it came back with the dumped one).

        The record and the bundle's environment both get the new key: a later snapshot
        copies the bundle config, and its restores authenticate with what is there.
        A sandbox from before agent keys (``old`` None) is left without one.
        """
        if old is None:
            rec.extra.pop(agent_client.KEY_FIELD, None)
            return
        assert rec.ip
        new = await self.m.agent.rotate(rec.ip, self.m.settings.agent_port, old)
        path = self._state_dir(rec.id) / "config.json"
        cfg = json.loads(path.read_text())
        agent_client.set_env_key(cfg, new)
        bundle.write(path.parent, cfg)
        rec.extra[agent_client.KEY_FIELD] = new
        self.m.store.update(rec)

    async def _finish_lazy(self, sandbox_id: str, lazy: checkpoint.LazyPages, images: Path, work: Path,
                           lock: asyncio.Lock) -> None:
        try:
            code = await lazy.wait()
            if code != 0:
                log.warning("lazy-pages for %s exited %s: %s", sandbox_id, code,
                            checkpoint._log_errors(work / "lazy-pages.log"))
            await asyncio.to_thread(shutil.rmtree, work, True)
            await asyncio.to_thread(shutil.rmtree, images, True)
        finally:
            lock.release()

    async def settle(self) -> None:
        """Wait for background page transfers (tests and shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def recover(self, rec: SandboxRecord) -> SandboxRecord:
        """Settle a record a crash left in ``suspending`` or ``snapshotting``.

        The outcome is decided from the host, never guessed: a container that still
        runs (or is paused mid-capture) is running as it was; a complete suspend image
        (renamed into place only after a successful dump) means suspended; anything
        else lost the sandbox's memory and is torn down and marked failed, with the
        reason. In-progress snapshots of a crashed capture are marked failed.
        """
        cid = ids.container(rec.id)
        before = rec.status
        state = await self.m.runc.state(cid)
        if state is not None and state.status in ("running", "paused"):
            if state.status == "paused":
                await checkpoint.resume(self.m.runc, cid)
            rec.status = Status.RUNNING
        elif before == Status.SUSPENDING and checkpoint.dump_complete(self._state_dir(rec.id) / "suspend.new"):
            # The crash came after a successful dump (which stopped the container) but
            # before the rename that publishes it: publish it now.
            final = self._state_dir(rec.id) / "suspend"
            shutil.rmtree(final, ignore_errors=True)
            (self._state_dir(rec.id) / "suspend.new").rename(final)
            rec.status, rec.init_pid = Status.SUSPENDED, None
        elif before == Status.SUSPENDING and (self._state_dir(rec.id) / "suspend" / "inventory.img").exists():
            rec.status, rec.init_pid = Status.SUSPENDED, None
        else:
            await self.m.teardown(rec.id)
            rec.status, rec.terminated_at = Status.FAILED, now_ms()
            rec.termination_reason = "interrupted"
            rec.error = f"the server stopped while the sandbox was {before.value} and its memory was lost"
        shutil.rmtree(self._state_dir(rec.id) / "suspend.new", ignore_errors=True)
        for snap in self.snapshots.list(sandbox_id=rec.id):
            if snap.status == SnapshotStatus.IN_PROGRESS:
                await self._remove_snapshot_files(self._snapshot_dir(snap.id))
                snap.status, snap.error = SnapshotStatus.FAILED, "the server stopped during the snapshot"
                self.snapshots.update(snap)
        self.m.store.update_if(rec, before)
        return rec

    async def recover_suspended(self, rec: SandboxRecord) -> SandboxRecord:
        """Settle a ``suspended`` record whose resume a crash may have interrupted.

        A container that runs was restored before the crash: it is running (its pages
        may still be streaming in from the lazy-pages daemon the dead server started;
        we wait for it, then drop the images as ``_finish_lazy`` would have). Otherwise
        a daemon left waiting for a restore that never came is killed, and the record
        stays suspended with its images, so the next resume works.
        """
        cid = ids.container(rec.id)
        state_dir = self._state_dir(rec.id)
        images = state_dir / "suspend"
        daemons = checkpoint.lazy_daemons(images)
        left: list[int] = []
        state = await self.m.runc.state(cid)
        if state is not None and state.status in ("running", "paused"):
            left = await checkpoint.wait_gone(daemons, timeout=60)
            if left:
                log.warning("recover %s: lazy-pages %s still serving after 60 s", rec.id, left)
            if state.status == "paused":
                await checkpoint.resume(self.m.runc, cid)
            rec.status, rec.init_pid = Status.RUNNING, state.pid
            rec.extra["resumed_at"] = now_ms()
            if not left:
                await asyncio.to_thread(shutil.rmtree, images, True)
        else:
            for pid in daemons:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await checkpoint.wait_gone(daemons, timeout=5)
            if state is not None:  # created but never started by a cut-short restore
                await self.m.runc.destroy(cid)
        if not left:  # a daemon still serving keeps its work dir (its socket, its log)
            for work in state_dir.glob("restore-*"):
                await asyncio.to_thread(shutil.rmtree, work, True)
        self.m.store.update_if(rec, Status.SUSPENDED)
        return rec

    async def remove_clone_scratch(self) -> list[str]:
        """Remove the scratch of clones whose process died mid-clone (a crash skips
        ``clone``'s ``finally``): the rootfs snapshot in the pool, the memory on tmpfs.

        Only names of the form ``<pid>_<start>-<source>-<id>`` are touched, and only
        when that process is gone: a live process's clone in flight is left alone.
        """
        removed = []
        candidates = [(p, p.name[len(CLONE_PREFIX):]) for p in (self.m.settings.pool / "snapshots").glob(CLONE_PREFIX + "*")]
        if CLONE_TMPFS.is_dir():
            candidates += [(p, p.name) for p in CLONE_TMPFS.iterdir()]
        for path, tag in candidates:
            creator = tag.split("-", 1)[0]
            if "_" not in creator or owner.is_alive(creator.replace("_", ":")):
                continue
            if path.is_relative_to(self.m.settings.pool):
                await self._remove_snapshot_files(path)
            else:
                await asyncio.to_thread(shutil.rmtree, path, True)
            removed.append(path.name)
        return removed

    # -- snapshots ----------------------------------------------------------------------

    async def _freeze_and_capture(self, rec: SandboxRecord, dest: Path, mem_dir: Path | None) -> int:
        """Snapshot rootfs (into ``dest/rootfs``) and memory (into ``mem_dir``) at one instant.

        Returns the size of the memory images. The container is frozen for the whole
        capture, so the two are consistent; it runs on afterwards.
        """
        cid = ids.container(rec.id)
        dest.mkdir(parents=True, exist_ok=True)
        await checkpoint.pause(self.m.runc, cid)
        try:
            faults.hit("capture.after_pause")
            await btrfs.snapshot(rootfs.path(self.m.settings.pool, rec.id), dest / "rootfs", readonly=True)
            faults.hit("capture.after_rootfs")
            if mem_dir is not None:
                timing = await checkpoint.checkpoint(self.m.runc, cid, mem_dir, leave_running=True)
                # Shared by every restore of it: out of every sandbox's reach (each
                # restore reads its own retargeted copy, criu_images.retarget).
                mem_dir.chmod(0o700)
                return timing.image_bytes
            return 0
        finally:
            await checkpoint.resume(self.m.runc, cid)

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
            "volumes": self.m.volumes.mounts(rec.id),  # volumes hook: by reference
        }

    async def snapshot(self, ref: str, namespace: str = "default",
                       snapshot_type: SnapshotType = SnapshotType.FILESYSTEM) -> SnapshotRecord:
        rec = self.m.get(ref, namespace)
        if rec.status != Status.RUNNING:
            raise Conflict(f"sandbox {rec.id} is {rec.status.value}; only a running sandbox can be snapshotted",
                           code="INVALID_STATE")
        snap = SnapshotRecord(id=ids.new_id(), namespace=rec.namespace, sandbox_id=rec.id,
                              snapshot_type=snapshot_type, base_image=rec.image)
        snap.source = self._manifest(rec, snapshot_type)
        self.snapshots.insert(snap)
        dest = self._snapshot_dir(snap.id)
        async with self._lock(rec.id):
            prev = rec.status
            rec.status = Status.SNAPSHOTTING
            self.m.store.update(rec)
            try:
                mem_dir = dest / "mem" if snapshot_type == SnapshotType.MEMORY else None
                image_bytes = await self._freeze_and_capture(rec, dest, mem_dir)
                faults.hit("snapshot.after_capture")
                (dest / "manifest.json").write_text(json.dumps(snap.source))
                (dest / "manifest.json").chmod(0o600)  # its bundle config holds the agent's secret
            except BaseException as exc:
                await self._remove_snapshot_files(dest)
                snap.status, snap.error = SnapshotStatus.FAILED, str(exc)
                self.snapshots.update(snap)
                raise
            finally:
                cur = self.m.get(rec.id)
                if cur.status == Status.SNAPSHOTTING:
                    cur.status = prev
                    self.m.store.update(cur)
        snap.status = SnapshotStatus.COMPLETED
        snap.size_bytes = image_bytes
        self.snapshots.update(snap)
        return snap

    def get_snapshot(self, snapshot_id: str, namespace: str | None = None) -> SnapshotRecord:
        snap = self.snapshots.get(snapshot_id)
        if snap is None or (namespace is not None and snap.namespace != namespace):
            raise NotFound(f"snapshot {snapshot_id!r} not found", code="SNAPSHOT_NOT_FOUND")
        return snap

    async def delete_snapshot(self, snapshot_id: str, namespace: str | None = None) -> None:
        snap = self.get_snapshot(snapshot_id, namespace)
        snap.status = SnapshotStatus.DELETING
        self.snapshots.update(snap)
        await self._remove_snapshot_files(self._snapshot_dir(snap.id))
        self.snapshots.delete(snap.id)

    async def _remove_snapshot_files(self, dest: Path) -> None:
        await btrfs.delete(dest / "rootfs")
        await asyncio.to_thread(shutil.rmtree, dest, True)

    # -- restore into a new identity -----------------------------------------------------

    async def restore(self, snapshot_id: str, *, namespace: str = "default", name: str | None = None,
                      timeout_secs: int | None = None, sandbox_id: str | None = None,
                      network: EgressPolicy | None = None) -> SandboxRecord:
        """Start a new sandbox from a snapshot (its memory too, for a memory snapshot).

        ``network`` replaces the egress policy the snapshot's sandbox had; None keeps it.
        """
        snap = self.get_snapshot(snapshot_id)
        if snap.status != SnapshotStatus.COMPLETED:
            raise InvalidRequest(f"snapshot {snapshot_id} is {snap.status.value}, not completed",
                                 code="SNAPSHOT_NOT_READY")
        return await self._start_from(self._snapshot_dir(snap.id), snap.source, namespace=namespace,
                                      name=name, timeout_secs=timeout_secs,
                                      memory=snap.snapshot_type == SnapshotType.MEMORY, sandbox_id=sandbox_id,
                                      network=network)

    async def clone(self, ref: str, times: int, namespace: str = "default") -> list[SandboxRecord | CellboxError]:
        """N running copies of a running sandbox (files and memory), each its own identity."""
        if not 1 <= times <= 64:
            raise InvalidRequest("times must be between 1 and 64")
        rec = self.m.get(ref, namespace)
        if rec.status != Status.RUNNING:
            raise Conflict(f"sandbox {rec.id} is {rec.status.value}; only a running sandbox can be cloned",
                           code="INVALID_STATE")
        self.m.volumes.check_clone(rec)  # volumes hook: a clone must not be a second writer
        # Scratch names carry the cloning process and the source, so a crash's leftovers
        # are found and removed at the next start (remove_clone_scratch).
        tmp_id = f"{owner.this_process().replace(':', '_')}-{rec.id}-{ids.new_id()}"
        tmp = self.m.settings.pool / "snapshots" / f"{CLONE_PREFIX}{tmp_id}"
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
                    try:
                        return await self._start_from(tmp, manifest, namespace=rec.namespace, name=None,
                                                      timeout_secs=rec.timeout_secs, memory=True,
                                                      mem_dir=mem_dir)
                    except CellboxError as exc:
                        return exc

            return list(await asyncio.gather(*[one() for _ in range(times)]))
        finally:
            await self._remove_snapshot_files(tmp)
            await asyncio.to_thread(shutil.rmtree, mem_dir, True)

    async def _start_from(self, snap_dir: Path, manifest: dict[str, Any], *, namespace: str,
                          name: str | None, timeout_secs: int | None, memory: bool,
                          mem_dir: Path | None = None, sandbox_id: str | None = None,
                          network: EgressPolicy | None = None) -> SandboxRecord:
        res = manifest["resources"]
        if name is not None:
            from .. import ids as ids_mod

            if problem := ids_mod.name_problem(name):
                raise InvalidRequest(problem)
        # Each copy gets the source's policy (or the one asked for) on its own address.
        policy = network if network is not None else policy_mod.from_wire(manifest.get("network_policy"))
        resolved = await self.m.egress.resolve(policy)
        rec = SandboxRecord(
            id=sandbox_id or ids.new_id(), namespace=namespace, name=name, image=manifest["image"],
            cpus=res["cpus"], memory_mb=res["memory_mb"], disk_mb=res["disk_mb"], pids_limit=res["pids_limit"],
            timeout_secs=timeout_secs, extra={"image_mb": manifest.get("image_mb", 0),
                                              "restored_from": manifest["sandbox_id"]},
        )
        if policy is not None:
            rec.extra["network_policy"] = policy.to_wire()
        await self.m._allocate(rec)
        undo = Undo()
        try:
            await self._build_restored(rec, snap_dir, manifest, memory, undo, mem_dir or snap_dir / "mem",
                                       policy, resolved)
        except BaseException as exc:
            errors = await undo.unwind()
            rec.status, rec.termination_reason, rec.terminated_at = Status.FAILED, "startup_failed", now_ms()
            rec.error = (str(exc) if isinstance(exc, CellboxError) else repr(exc)) + (
                f" (cleanup also failed: {errors[0]})" if errors else "")
            self.m.store.update(rec)
            raise
        undo.discard()
        return rec

    async def _build_restored(self, rec: SandboxRecord, snap_dir: Path, manifest: dict[str, Any],
                              memory: bool, undo: Undo, mem_dir: Path,
                              policy: EgressPolicy | None = None, resolved: Resolved | None = None) -> None:
        sid, settings = rec.id, self.m.settings
        state_dir = self._state_dir(sid)
        state_dir.mkdir(parents=True, exist_ok=True)
        undo.push("state dir", lambda: asyncio.to_thread(shutil.rmtree, state_dir, True))
        dest = rootfs.path(settings.pool, sid)
        await btrfs.snapshot(snap_dir / "rootfs", dest)
        undo.push("rootfs", lambda: rootfs.remove(settings.pool, sid))
        await btrfs.limit(dest, max(16, rec.disk_mb - int(manifest.get("image_mb", 0))))
        rootfs.write_identity(dest, hostname=sid, nameserver=str(settings.gateway))
        # A new address, so a new id range: the files on disk keep ids 0..65535 and
        # only the idmapped mount (and the bundle's mapping) changes.
        # A memory image comes back with the namespaces it was dumped with: one from
        # before user namespaces (no user namespace in its bundle) restores without.
        cfg = copy.deepcopy(manifest["bundle_config"])
        use_userns = bundle.has_userns(cfg) if memory else settings.userns
        identity = await self.m.prepare_identity(rec, dest, undo, use_userns)
        # Before the restored processes run their next instruction.
        await self.m.apply_egress(rec, policy, resolved, undo)
        # A restored agent still holds the source's secret (the one in the manifest's
        # environment): the new sandbox proves it and then rotates it. A booted one gets
        # a fresh secret of its own.
        source_key = agent_client.env_key(cfg) if memory else None
        if not memory:
            agent_client.set_env_key(cfg, agent_client.new_key())
        bundle.set_identity(cfg, **identity)
        await self.m.volumes.prepare_restore(rec, manifest.get("volumes"), cfg, dest, memory, undo)  # volumes hook
        cfg["hostname"] = sid
        cfg["linux"]["cgroupsPath"] = ids.cgroup_path(sid)
        # The tree is a copy of the tenant's: its mount points may be links (a hostile
        # snapshot); runc and CRIU then get real directories to mount on.
        rootfs.prepare_mount_points(dest, bundle.mount_points(cfg))
        bundle.write(state_dir, cfg)
        undo.push("container", lambda: self.m.runc.destroy(ids.container(sid)))
        if memory:
            work = state_dir / "restore"
            images = mem_dir
            if identity["userns_base"] is not None:  # CRIU restores the dump's mapping: give it ours
                images = await asyncio.to_thread(criu_images.retarget, mem_dir, identity["userns_base"],
                                                 userns.SIZE, sid)
            try:
                rec.init_pid = await checkpoint.restore(self.m.runc, ids.container(sid), state_dir, images, work)
                faults.hit("clone.after_restore")
            finally:
                if images != mem_dir:
                    await asyncio.to_thread(shutil.rmtree, images, True)
            # The UTS namespace came back with the source's hostname.
            await _proc.run(["nsenter", "--target", str(rec.init_pid), "--uts", "hostname", sid])
            shutil.rmtree(work, ignore_errors=True)
        else:
            rec.init_pid = await self.m.runc.run_detached(ids.container(sid), state_dir)
        if memory:
            old = bytes.fromhex(source_key) if source_key else None
            await self.m._wait_agent(rec, state_dir / "runc.log", key=old)
            await self._rotate_key(rec, old)
        else:
            rec.extra[agent_client.KEY_FIELD] = agent_client.env_key(cfg)
            await self.m._wait_agent(rec, state_dir / "runc.log")
        rec.status = Status.RUNNING
        self.m.store.update(rec)
