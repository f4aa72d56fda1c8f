"""Volumes with the real manager: memory snapshots restore with the same volume (by
reference) under the one-writer rule, filesystem snapshots do not carry volumes, and
teardown leaves no host-side mount behind."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from cellbox.errors import Conflict
from cellbox.manager import volume_mounts as vm
from cellbox.manager.snapshot_store import SnapshotType
from cellbox.storage import volumes as disk

from ..leaks import leftovers

pytestmark = pytest.mark.root


@pytest.fixture
def volume(manager, loop_thread, sandboxes) -> Iterator[str]:
    rec = loop_thread.run(manager.volumes.create("default", f"itvol-{secrets.token_hex(3)}", 64))
    yield rec.name
    sandboxes.cleanup()  # first: a mounted volume cannot be deleted
    loop_thread.run(manager.volumes.delete("default", rec.id))
    assert not disk.volume_dir(manager.settings.pool, rec.id).exists()


def attach(manager, loop_thread, rec, name: str, path: str, read_only: bool = False):
    return loop_thread.run(manager.volumes.attach(rec, vm.MountSpec(name, path, read_only)))


def test_memory_snapshot_restores_the_same_volume(sandboxes, manager, loop_thread, volume, settings):
    src = sandboxes.create(name=f"vsrc-{secrets.token_hex(3)}")
    src = attach(manager, loop_thread, src, volume, "/data")
    assert sandboxes.sh(src, "echo before > /data/f")["exit_code"] == 0
    snap = loop_thread.run(manager.memory.snapshot(src.id, snapshot_type=SnapshotType.MEMORY))
    try:
        # The source still writes it: a restore would be a second writer.
        with pytest.raises(Conflict) as err:
            loop_thread.run(manager.memory.restore(snap.id))
        assert err.value.code == "VOLUME_IN_USE" and src.id in err.value.message
        failed = [r for r in manager.store.list("default") if r.extra.get("restored_from") == src.id]
        assert failed and all(r.status.is_final for r in failed)
        assert leftovers(settings, {r.id for r in failed}) == {}
        sandboxes.destroy(src)
        copy = loop_thread.run(manager.memory.restore(snap.id))
        sandboxes.made.append(copy.id)
        assert [m["mount_path"] for m in copy.extra["volumes"]] == ["/data"]
        # The same volume, not a copy: a write in the restored sandbox is in the volume's head.
        assert sandboxes.sh(copy, "cat /data/f && echo after > /data/g")["out"] == "before"
        vol = manager.volumes.get("default", volume)
        head = disk.head(settings.pool, vol.id)
        assert os.lstat(head / "g").st_size == len("after\n")
        sandboxes.destroy(copy)
        assert leftovers(settings, {copy.id}) == {}
    finally:
        loop_thread.run(manager.memory.delete_snapshot(snap.id))


def test_filesystem_snapshot_is_files_only(sandboxes, manager, loop_thread, volume):
    src = sandboxes.create()
    src = attach(manager, loop_thread, src, volume, "/data", read_only=True)
    snap = loop_thread.run(manager.memory.snapshot(src.id, snapshot_type=SnapshotType.FILESYSTEM))
    try:
        copy = loop_thread.run(manager.memory.restore(snap.id))
        sandboxes.made.append(copy.id)
        assert manager.volumes.mounts(copy.id) == [] and not copy.extra.get("volumes")
        assert sandboxes.sh(copy, "grep -c ' /data ' /proc/self/mountinfo")["out"] == "0"
    finally:
        loop_thread.run(manager.memory.delete_snapshot(snap.id))


def test_destroy_takes_the_host_mounts(sandboxes, manager, loop_thread, volume, settings):
    rec = sandboxes.create()
    rec = attach(manager, loop_thread, rec, volume, "/a")
    rec = attach(manager, loop_thread, rec, volume, "/b", read_only=True)
    host = vm.host_dir(settings.data_dir, rec.id)
    assert sorted(os.listdir(host)) == ["cbvol-0", "cbvol-1"] and all(os.path.ismount(host / k) for k in os.listdir(host))
    criu_conf = (settings.sandboxes_dir / rec.id / "criu.conf").read_text()
    assert "ext-mount-map /a:cbvol-0" in criu_conf and f"ext-mount-map cbvol-1:{host / 'cbvol-1'}" in criu_conf
    sandboxes.destroy(rec)
    assert not host.exists()
    assert leftovers(settings, {rec.id}) == {}
    assert manager.volumes.holders(manager.volumes.get("default", volume).id) == []


def test_start_sweeps_mounts_of_sandboxes_ended_elsewhere(sandboxes, manager, loop_thread, volume, settings,
                                                          monkeypatch):
    """A sandbox ended by a process without the volume hook (or a crash mid-teardown)
    leaves its host-side mounts: the next start takes them down."""
    rec = attach(manager, loop_thread, sandboxes.create(), volume, "/data")
    host = vm.host_dir(settings.data_dir, rec.id)

    async def skip(sandbox_id: str) -> None:
        return None

    monkeypatch.setattr(manager.volumes, "teardown", skip)
    sandboxes.destroy(rec)
    monkeypatch.undo()
    assert os.path.ismount(host / "cbvol-0")
    assert rec.id in loop_thread.run(manager.volumes.sweep())
    assert not host.exists() and manager.volumes.mounts(rec.id) == []
    assert leftovers(settings, {rec.id}) == {}


def test_restore_into_another_project_never_mounts_its_volumes(sandboxes, manager, loop_thread, volume, settings):
    """A memory image can reach another project (an image registered from a snapshot);
    the volumes it was dumped with stay in theirs."""
    src = attach(manager, loop_thread, sandboxes.create(), volume, "/ro", read_only=True)
    snap = loop_thread.run(manager.memory.snapshot(src.id, snapshot_type=SnapshotType.MEMORY))
    try:
        with pytest.raises(Conflict) as err:
            loop_thread.run(manager.memory.restore(snap.id, namespace=f"other-{secrets.token_hex(3)}"))
        assert err.value.code == "VOLUME_GONE"
        failed = [r for r in manager.store.list() if r.extra.get("restored_from") == src.id]
        assert failed and all(r.status.is_final for r in failed)
        assert leftovers(settings, {r.id for r in failed}) == {}
        # In its own project, read-only volumes are shared with the restore.
        copy = loop_thread.run(manager.memory.restore(snap.id))
        sandboxes.made.append(copy.id)
        assert [m["mount_path"] for m in manager.volumes.mounts(copy.id)] == ["/ro"]
    finally:
        loop_thread.run(manager.memory.delete_snapshot(snap.id))


def test_without_user_namespaces(settings, loop_thread, manager):
    """CELLBOX_USERNS=0: a plain (not idmapped) mount, through suspend/resume too."""
    import dataclasses

    from cellbox.manager.sandboxes import CreateSpec, SandboxManager
    from cellbox.manager.store import Store

    from ..sse import run_command

    store = Store(settings.db_path)
    mgr = SandboxManager(dataclasses.replace(settings, warm_pool_size=0, userns=False), store)
    loop_thread.run(mgr.start())
    vol = loop_thread.run(mgr.volumes.create("default", f"nou-{secrets.token_hex(3)}", 64))
    rec = None

    def sh(script: str) -> str:
        import httpx

        cur = mgr.get(rec.id)
        with httpx.Client(base_url=f"http://{cur.ip}:{settings.agent_port}", timeout=60) as c:
            return run_command(c, "/bin/sh", ["-c", script], timeout=30)["out"]

    try:
        rec = loop_thread.run(mgr.create(CreateSpec(name=f"nou-{secrets.token_hex(3)}")))
        loop_thread.run(mgr.volumes.attach(rec, vm.MountSpec(vol.name, "/data")))
        assert sh("echo hi > /data/f && stat -c %u /data/f && grep -c ' /data .*nosuid,nodev' /proc/self/mountinfo") \
            .split() == ["0", "1"]
        loop_thread.run(mgr.memory.suspend(rec.id))
        loop_thread.run(mgr.memory.resume(rec.id))
        assert sh("cat /data/f") == "hi"
        loop_thread.run(mgr.volumes.detach(mgr.get(rec.id), "/data"))
        assert mgr.volumes.mounts(rec.id) == []
    finally:
        if rec is not None:
            loop_thread.run(mgr.destroy(rec.id))
            assert leftovers(settings, {rec.id}) == {}
        loop_thread.run(mgr.volumes.delete("default", vol.id))
        loop_thread.run(mgr.stop())
        store.close()
