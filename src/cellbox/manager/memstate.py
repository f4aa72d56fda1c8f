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
import ipaddress
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from .. import faults, ids
from ..errors import InternalFailure, InvalidState, SandboxNotNamed, SuspendFailed
from ..network import netns
from ..network import policy as policy_mod
from ..runtime import bundle, checkpoint, userns
from ..storage import rootfs
from . import agent_client, owner
from .assemble import AGENT_READY_TIMEOUT
from .records import SandboxRecord, Status, now_ms
from .snapshot_store import SnapshotStatus
from .snapshots import CLONE_PREFIX, CLONE_TMPFS, MANIFEST_VERSION, Snapshots

__all__ = ["CLONE_PREFIX", "CLONE_TMPFS", "MANIFEST_VERSION", "MemoryState"]
log = logging.getLogger(__name__)


class MemoryState(Snapshots):
    """Suspend and resume (the same identity), crash recovery of both; snapshots,
    restores and clones from the base (``snapshots.py``)."""

    async def suspend(self, ref: str, namespace: str = "default") -> SandboxRecord:
        rec = self.get(ref, namespace)
        if not rec.name:
            raise SandboxNotNamed()
        async with self._lock(rec.id):
            rec = self.get(rec.id)
            if rec.status == Status.SUSPENDED:
                return rec
            if rec.status != Status.RUNNING:
                raise InvalidState(rec.id, rec.status.value, "; only a running sandbox can be suspended")
            state_dir = self._state_dir(rec.id)
            new = state_dir / "suspend.new"
            shutil.rmtree(new, ignore_errors=True)
            rec.status = Status.SUSPENDING
            self.store.update(rec)
            faults.hit("suspend.after_status")
            try:
                await self.assembler.runtime.settled(ids.container(rec.id))  # a lazy restore's pages are in
                faults.hit("suspend.dump")  # :fail = CRIU failing mid-dump
                timing = await self._dump(rec.id, new)
            except BaseException as exc:
                shutil.rmtree(new, ignore_errors=True)
                state = await self.runc.state(ids.container(rec.id))
                rec = self.get(rec.id)
                # CRIU's log names host paths and internals: it goes to the server's log
                # only; the client and the record get what happened and what it means.
                log.warning("suspend of sandbox %s failed: %s", rec.id, exc)
                if state is not None and state.status in ("running", "paused"):
                    if state.status == "paused":
                        await checkpoint.resume(self.runc, ids.container(rec.id))
                    rec.status = Status.RUNNING  # as it was
                    failure = SuspendFailed(rec.id)
                    rec.extra["last_error"] = {"code": failure.code, "message": failure.message, "at": now_ms()}
                else:
                    failure = SuspendFailed(rec.id, stopped=True)
                    rec.status, rec.error = Status.FAILED, failure.message
                    rec.terminated_at, rec.termination_reason = now_ms(), "suspend_failed"
                self.store.update(rec)
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
            rec = self.get(rec.id)
            rec.status, rec.init_pid = Status.SUSPENDED, None
            rec.extra.pop("last_error", None)
            rec.extra["suspended_at"] = now_ms()
            rec.extra["suspend_image_bytes"] = timing.image_bytes
            self.store.update(rec)
            return rec

    async def _dump(self, sandbox_id: str, images: Path) -> checkpoint.Timing:
        """``runc checkpoint`` into ``images``; a runc error after a dump CRIU finished is
        not a failure: the images are whole and the tasks are gone.

        Seen under load: runc answered "container still running" after CRIU's
        "Dumping finished successfully" (it looked before the init was reaped); the
        sandbox was then reported running with its processes dead and its dump deleted,
        and the sweep failed it and removed its files.
        """
        # Frozen here first, by the freezer that lets a task out of a vfork (freezer.py):
        # CRIU takes a FROZEN cgroup as is, and its own freeze would catch the task there
        # and fail after 10 s (tests/integration/test_memstate.py, the vfork tests).
        await checkpoint.pause(self.runc, ids.container(sandbox_id))
        try:
            return await checkpoint.checkpoint(self.runc, ids.container(sandbox_id), images, leave_running=False)
        except Exception as exc:
            if not checkpoint.dump_complete(images):
                raise
            log.warning("suspend %s: runc failed after a complete dump, keeping it: %s", sandbox_id, exc)
            await self.runc.destroy(ids.container(sandbox_id))
            return checkpoint.Timing(0.0, checkpoint.dir_bytes(images))

    async def resume(self, ref: str, namespace: str = "default") -> SandboxRecord:
        rec = self.get(ref, namespace)
        lock = self._lock(rec.id)
        await lock.acquire()
        handed_over = False
        try:
            rec = self.get(rec.id)
            if rec.status == Status.RUNNING:
                return rec
            if rec.status != Status.SUSPENDED:
                raise InvalidState(rec.id, rec.status.value, ", not suspended")
            state_dir = self._state_dir(rec.id)
            images = state_dir / "suspend"
            if not (images / "inventory.img").exists():
                raise InternalFailure(f"sandbox {rec.id} has no complete suspend image")
            await self._rehost(rec, state_dir)
            cfg = json.loads((state_dir / "config.json").read_text())
            rootfs.prepare_mount_points(rootfs.path(self.settings.pool, rec.id), bundle.mount_points(cfg))
            if self.volumes is not None:
                await self.volumes.prepare_resume(rec)  # volumes hook
            work = state_dir / f"restore-{int(time.time() * 1000)}"
            lazy = await checkpoint.LazyPages.start(images, work)
            faults.hit("resume.after_lazy_pages")
            try:
                rec.init_pid = await checkpoint.restore(self.runc, ids.container(rec.id), state_dir, images,
                                                        work, lazy=lazy)
                faults.hit("resume.after_restore")
                assert rec.ip
                await self.assembler.agent.wait_ready(rec.ip, self.settings.agent_port, agent_client.key_of(rec),
                                                      init_pid=rec.init_pid, log_path=work / "restore.log",
                                                      timeout=AGENT_READY_TIMEOUT)
                await self.assembler.rotate_key(rec, agent_client.key_of(rec))
            except BaseException:
                # Leave it suspended, images intact: a later resume can try again.
                await lazy.kill()
                await self.runc.destroy(ids.container(rec.id))
                shutil.rmtree(work, ignore_errors=True)
                raise
            rec.status = Status.RUNNING
            rec.extra["resumed_at"] = now_ms()
            rec.extra["resume_count"] = rec.extra.get("resume_count", 0) + 1
            self.store.update(rec)
            # The sandbox answers now; the rest of its memory streams in behind it. The
            # lock stays held until then (images must stay, no dump may start meanwhile).
            self._background.spawn(self._finish_lazy(rec.id, lazy, images, work, lock))
            handed_over = True
            return rec
        finally:
            if not handed_over:
                lock.release()

    async def _rehost(self, rec: SandboxRecord, state_dir: Path) -> None:
        """The host side a resume needs: the idmapped rootfs (user namespace; its netns
        the hook remakes) or the netns, and after a host reboot the port's walls and
        the egress rules, which went with the host's network."""
        userns_bundle = bundle.has_userns(json.loads((state_dir / "config.json").read_text()))
        if userns_bundle:
            # The prestart hook makes the netns at every restore (suspend removed the
            # old one); the idmapped rootfs is still mounted unless the host rebooted.
            assert rec.ip
            rebooted = not os.path.ismount(userns.mount_path(state_dir))
            await asyncio.to_thread(userns.mount_idmapped, rootfs.path(self.settings.pool, rec.id),
                                    userns.mount_path(state_dir),
                                    userns.host_base(self.settings.subnet, rec.ip))
            if rebooted:  # the port's walls went with the host's nft tables
                await netns.pin_walls(self.settings, rec.id, ipaddress.IPv4Address(rec.ip))
        else:
            rebooted = not netns.exists(rec.id)
            if rebooted:
                await netns.create(self.settings, rec.id, ipaddress.IPv4Address(rec.ip))
        if rebooted:  # the host rebooted: its network (and our nft rules) went with it
            policy = policy_mod.from_wire(rec.extra.get("network_policy"))
            if policy is not None:
                assert rec.ip
                await self.egress.apply(rec.id, rec.ip, policy)

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
        await self._background.settle()
        await self.assembler.runtime.settle_all()

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
        state = await self.runc.state(cid)
        if state is not None and state.status in ("running", "paused"):
            if state.status == "paused":
                await checkpoint.resume(self.runc, cid)
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
            await self.assembler.teardown(rec.id)
            rec.status, rec.terminated_at = Status.FAILED, now_ms()
            rec.termination_reason = "interrupted"
            rec.error = f"the server stopped while the sandbox was {before.value} and its memory was lost"
        shutil.rmtree(self._state_dir(rec.id) / "suspend.new", ignore_errors=True)
        for snap in self.snapshots.list(sandbox_id=rec.id):
            if snap.status == SnapshotStatus.IN_PROGRESS:
                await self.remove_snapshot_files(self.snapshot_dir(snap.id))
                snap.status, snap.error = SnapshotStatus.FAILED, "the server stopped during the snapshot"
                self.snapshots.update(snap)
        self.store.update_if(rec, before)
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
        state = await self.runc.state(cid)
        if state is not None and state.status in ("running", "paused"):
            left = await checkpoint.wait_gone(daemons, timeout=60)
            if left:
                log.warning("recover %s: lazy-pages %s still serving after 60 s", rec.id, left)
            if state.status == "paused":
                await checkpoint.resume(self.runc, cid)
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
                await self.runc.destroy(cid)
        if not left:  # a daemon still serving keeps its work dir (its socket, its log)
            for work in state_dir.glob("restore-*"):
                await asyncio.to_thread(shutil.rmtree, work, True)
        self.store.update_if(rec, Status.SUSPENDED)
        return rec

    async def remove_clone_scratch(self) -> list[str]:
        """Remove the scratch of clones whose process died mid-clone (a crash skips
        ``clone``'s ``finally``): the rootfs snapshot in the pool, the memory on tmpfs.

        Only names of the form ``<pid>_<start>-<source>-<id>`` are touched, and only
        when that process is gone: a live process's clone in flight is left alone.
        """
        removed = []
        candidates = [(p, p.name[len(CLONE_PREFIX):]) for p in (self.settings.pool / "snapshots").glob(CLONE_PREFIX + "*")]
        if CLONE_TMPFS.is_dir():
            candidates += [(p, p.name) for p in CLONE_TMPFS.iterdir()]
        for path, tag in candidates:
            creator = tag.split("-", 1)[0]
            if "_" not in creator or owner.is_alive(creator.replace("_", ":")):
                continue
            if path.is_relative_to(self.settings.pool):
                await self.remove_snapshot_files(path)
            else:
                await asyncio.to_thread(shutil.rmtree, path, True)
            removed.append(path.name)
        return removed

    # -- snapshots ----------------------------------------------------------------------

