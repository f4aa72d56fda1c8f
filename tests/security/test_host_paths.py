"""Host-side path operations on a tenant's tree stay inside that tree (walls, hole 1).

A tenant owns every byte of its root filesystem, symlinks and special files
included, and so of every snapshot and registered image made from it. Whenever the
host later works on a copy of that tree (clone, restore from a memory or filesystem
snapshot, suspend/resume, register-as-image and create from it, the warm pool's
page-cache pre-read), it must resolve each path as if chrooted into the copy and
never open a special file. Each test plants the trap from inside a real sandbox
(or, where the tenant cannot, on the sandbox's tree from the host, as a hostile image
would have it), runs the host operations, and then checks *from the host* that the
bait outside the sandbox was not created, written, opened or read (inotify on the
bait, contents compared), and that every operation either worked or failed with a
clear error (a 4xx-class ``CellboxError``, never a 500 or a hang) leaving nothing
half-made.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cellbox.errors import CellboxError
from cellbox.manager.records import SandboxRecord, Status
from cellbox.manager.snapshot_store import SnapshotType

from ..leaks import leftovers
from .conftest import run_python_json

pytestmark = pytest.mark.root

IN_ALL_EVENTS = 0xFFF  # access, modify, attrib, close, open, moves, create, delete, self-events
SECRET = "host-only secret\n"


@dataclass
class Bait:
    """Host files a tenant points its symlinks at, watched with inotify."""

    dir: Path  # an empty host directory
    file: Path  # a host file with known contents
    fd: int

    def events(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            pos = 0
            while pos < len(buf):
                _, mask, _, length = struct.unpack_from("iIII", buf, pos)
                name = buf[pos + 16: pos + 16 + length].rstrip(b"\0").decode()
                out.append((name, mask))
                pos += 16 + length

    def assert_untouched(self) -> None:
        """Nothing was created in the directory; the file was not opened, read or written."""
        assert self.events() == [], "the host touched the bait outside the sandbox"
        assert os.listdir(self.dir) == []
        assert self.file.read_text() == SECRET
        mounts = Path("/proc/self/mountinfo").read_text()
        assert str(self.dir) not in mounts, "something was mounted on the host directory"


@pytest.fixture
def bait(tmp_path: Path) -> Iterator[Bait]:
    d = tmp_path / "hostdir"
    d.mkdir()
    f = tmp_path / "secret"
    f.write_text(SECRET)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    for path in (d, f):
        assert libc.inotify_add_watch(fd, str(path).encode(), IN_ALL_EVENTS) >= 0
    try:
        yield Bait(d, f, fd)
    finally:
        os.close(fd)


def up_to_root(depth: int = 24) -> str:
    """A relative prefix that climbs out of any tree to ``/`` (on the host: the pool
    is a few levels deep; inside a sandbox ``..`` of ``/`` is ``/``)."""
    return "/".join([".."] * depth)


def plant(sandboxes: Any, rec: SandboxRecord, code: str) -> Any:
    """Run ``code`` as the tenant's root; it prints a JSON document last."""
    return run_python_json(sandboxes, rec, "import json, os\n" + code)


class Ops:
    """The host operations on a copy of a tenant's tree, each judged the same way."""

    def __init__(self, sandboxes: Any, manager: Any, lt: Any, settings: Any) -> None:
        self.sandboxes, self.m, self.lt, self.settings = sandboxes, manager, lt, settings
        self.snapshots: list[str] = []
        self.images: list[str] = []
        self.outcomes: list[str] = []

    def attempt(self, what: str, coro: Coroutine[Any, Any, Any], timeout: float = 90) -> Any:
        """Run one host operation: its result, or None if it failed with a clear error."""
        try:
            result = self.lt.run(coro, timeout=timeout)
        except CellboxError as exc:
            assert exc.status < 500, f"{what}: a server error instead of a clear refusal: {exc!r}"
            assert "Traceback" not in exc.message
            self.outcomes.append(f"{what}: refused ({exc.code}: {exc.message})")
            return None
        self.outcomes.append(f"{what}: ok")
        return result

    def started(self, rec: SandboxRecord | None) -> None:
        """A sandbox an operation made: it runs and knows its own name."""
        if rec is None:
            return
        self.sandboxes.made.append(rec.id)
        assert rec.status == Status.RUNNING
        assert self.sandboxes.run(rec, "hostname")["out"].strip() == rec.id

    def clone(self, src: SandboxRecord) -> None:
        copies = self.attempt("clone", self.m.memory.clone(src.id, 1))
        for c in copies or []:
            if isinstance(c, CellboxError):
                assert c.status < 500, f"clone: a server error instead of a clear refusal: {c!r}"
                self.outcomes.append(f"clone copy: refused ({c.code})")
            else:
                self.started(c)

    def snapshot_restore(self, src: SandboxRecord, kind: SnapshotType, register: bool = False) -> None:
        snap = self.lt.run(self.m.memory.snapshot(src.id, snapshot_type=kind))
        self.snapshots.append(snap.id)
        self.started(self.attempt(f"restore {kind.value}", self.m.memory.restore(snap.id)))
        if register:
            from cellbox.manager.sandboxes import CreateSpec

            name = f"test/hostile-{secrets.token_hex(4)}"
            info = self.attempt("register", self.m.image_manager.register(name, snap.id))
            if info is not None:
                self.images.append(name)
                self.started(self.attempt("create from registered image",
                                          self.m.image_manager.create(CreateSpec(image=name))))

    def cleanup(self) -> None:
        print("outcomes:", *self.outcomes, sep="\n  ")  # shown with -rA / on failure
        for sid in list(self.sandboxes.made):
            try:
                self.lt.run(self.m.destroy(sid))
            except Exception:  # noqa: BLE001 - reach every one
                self.lt.run(self.m.teardown(sid))
        self.sandboxes.made.clear()
        for name in self.images:
            self.lt.run(self.m.image_manager.remove(name))
        for sid in self.snapshots:
            self.lt.run(self.m.memory.delete_snapshot(sid))


@pytest.fixture
def ops(sandboxes: Any, manager: Any, loop_thread: Any, settings: Any) -> Iterator[Ops]:
    o = Ops(sandboxes, manager, loop_thread, settings)
    try:
        yield o
    finally:
        o.cleanup()


def assert_nothing_half_made(settings: Any, before: set[str]) -> None:
    """Every rootfs in the pool belongs to a live record (a refused copy left none)."""
    from ..leaks import live_ids

    made = {p.name for p in (settings.pool / "sandboxes").iterdir()} - before
    assert made <= live_ids(settings), f"rootfs without a live sandbox: {made - live_ids(settings)}"


# -- /etc itself points out of the tree -------------------------------------------------

ETC_TRAPS = {
    # The reproduction: /etc replaced by an absolute link to a host directory.
    "absolute": "os.rename('/etc', '/etc0'); os.symlink(HOSTDIR, '/etc')",
    # The same through `..`: harmless inside the sandbox (.. of / is /), out of the
    # pool on the host.
    "relative": "os.rename('/etc', '/etc0'); os.symlink(UP + HOSTDIR, '/etc')",
    # A loop: resolving it must fail cleanly, not with a 500. (Relative on purpose:
    # an absolute `/etc -> /etc` is, to a host that follows it, the host's own /etc.
    # Every trap here points only at bait this test made.)
    "loop": "os.rename('/etc', '/etc0'); os.symlink('etc1', '/etc'); os.symlink('etc', '/etc1')",
}


@pytest.mark.parametrize("trap", sorted(ETC_TRAPS))
def test_etc_symlinked_out_of_the_tree(trap, bait, ops, sandboxes, settings) -> None:
    src = sandboxes.create(memory_mb=256)
    before = {p.name for p in (settings.pool / "sandboxes").iterdir()}
    plant(sandboxes, src, f"HOSTDIR, UP = {str(bait.dir)!r}, {up_to_root()!r}\n{ETC_TRAPS[trap]}\n"
                          "print(json.dumps(os.readlink('/etc')))")
    ops.clone(src)
    ops.snapshot_restore(src, SnapshotType.MEMORY)
    ops.snapshot_restore(src, SnapshotType.FILESYSTEM, register=True)
    bait.assert_untouched()
    assert_nothing_half_made(settings, before)


# -- the identity files themselves are traps ------------------------------------------


def test_identity_files_are_links_and_special_files(bait, ops, sandboxes, settings) -> None:
    """/etc/hostname a FIFO (the old code opened it for writing and hung the server's
    event loop), /etc/hosts an absolute link to a host file, /etc/resolv.conf a link
    climbing out with ``..``: each is replaced, never opened."""
    src = sandboxes.create(memory_mb=256)
    plant(sandboxes, src, f"HOSTFILE, UP = {str(bait.file)!r}, {up_to_root()!r}\n"
                          "for n in ('hostname', 'hosts', 'resolv.conf'): os.unlink('/etc/' + n)\n"
                          "os.mkfifo('/etc/hostname')\n"
                          "os.symlink(HOSTFILE, '/etc/hosts')\n"
                          "os.symlink(UP + HOSTFILE, '/etc/resolv.conf')\n"
                          "print(json.dumps(sorted(os.listdir('/etc'))[:3]))")
    with unwedge_fifos(settings, "etc/hostname"):
        ops.clone(src)
        ops.snapshot_restore(src, SnapshotType.FILESYSTEM)
    bait.assert_untouched()
    copies = [sid for sid in ops.sandboxes.made if sid != src.id]
    assert len(copies) == 2  # the clone and the restored sandbox both work
    for sid in copies:
        root = settings.pool / "sandboxes" / sid / "etc"
        assert (root / "hostname").read_text() == sid + "\n"
        assert stat.S_ISREG(os.lstat(root / "hosts").st_mode)


class unwedge_fifos:
    """If the host blocks opening a tenant's FIFO, open its other end from the test
    after a while so the server thread comes back (and fail the test): a hang would
    otherwise take the rest of the session with it."""

    def __init__(self, settings: Any, rel: str, after: float = 20.0) -> None:
        self.pattern, self.after = rel, after
        self.pool = settings.pool / "sandboxes"
        self.stop = threading.Event()
        self.opened: list[str] = []

    def _run(self) -> None:
        if self.stop.wait(self.after):
            return
        while not self.stop.is_set():
            for fifo in self.pool.glob(f"*/{self.pattern}"):
                try:
                    if not stat.S_ISFIFO(os.lstat(fifo).st_mode):
                        continue
                    for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK):
                        try:
                            fd = os.open(fifo, flags)
                        except OSError as exc:
                            if exc.errno == errno.ENXIO:  # no reader waiting
                                continue
                            raise
                        self.opened.append(str(fifo))
                        time.sleep(0.2)
                        os.close(fd)
                except OSError:
                    continue
            time.sleep(0.5)

    def __enter__(self) -> "unwedge_fifos":
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.opened, f"the host blocked opening a tenant's FIFO: {self.opened}"


# -- /.cellbox (the agent's mount point) is a link out -----------------------------------


def test_agent_mount_point_symlinked_out(bait, ops, sandboxes, settings, loop_thread, manager) -> None:
    """A tenant cannot replace ``/.cellbox`` (a mount point) nor hard-link a file of the
    host into its tree (btrfs subvolume and mount boundaries), but a tree can come with
    ``/.cellbox`` replaced (a hostile snapshot or image): the runtime's mounts and
    CRIU's restore must stay inside the tree. So the link is planted from the host into
    the copies the host restores from: a memory snapshot, a filesystem snapshot, and a
    suspended sandbox's tree (no container runs on it then)."""
    src = sandboxes.create(name=f"mp-{secrets.token_hex(3)}", memory_mb=256)
    tenant = plant(sandboxes, src, "out = {}\n"
                                   "for what, fn in (('rename', lambda: os.rename('/.cellbox', '/cb0')),\n"
                                   "                 ('hardlink', lambda: os.link('/.cellbox/bin/python3', '/py'))):\n"
                                   "    try:\n        fn(); out[what] = 'done'\n"
                                   "    except OSError as e:\n        out[what] = e.errno\n"
                                   "print(json.dumps(out))")
    assert tenant == {"rename": errno.EBUSY, "hardlink": errno.EXDEV}, tenant
    for kind in (SnapshotType.MEMORY, SnapshotType.FILESYSTEM):
        snap = loop_thread.run(manager.memory.snapshot(src.id, snapshot_type=kind))
        ops.snapshots.append(snap.id)
        tree = settings.pool / "snapshots" / snap.id / "rootfs"
        subprocess.run(["btrfs", "property", "set", "-ts", str(tree), "ro", "false"], check=True)
        link_out(tree, bait.dir)
        subprocess.run(["btrfs", "property", "set", "-ts", str(tree), "ro", "true"], check=True)
        ops.started(ops.attempt(f"restore {kind.value}", manager.memory.restore(snap.id)))
    ops.attempt("suspend", manager.memory.suspend(src.id))
    link_out(settings.pool / "sandboxes" / src.id, bait.dir)
    ops.attempt("resume", manager.memory.resume(src.id))
    loop_thread.run(manager.memory.settle())
    bait.assert_untouched()


def link_out(tree: Path, target: Path) -> None:
    os.rename(tree / ".cellbox", tree / ".cellbox0")
    os.symlink(str(target), tree / ".cellbox")


# -- the warm pool's page-cache pre-read ------------------------------------------------------


def test_prefault_of_a_tenant_tree(bait, sandboxes, settings) -> None:
    """The warm pool pre-reads well-known files of each new sandbox from the host
    (``warm.prefault``), also for images registered from a tenant's snapshot. Here
    ``/usr/bin/node`` is a link to a host file and a library the pre-read globs for is
    a FIFO: neither may be opened (the old code read the host file and blocked on the
    FIFO for good). Called on the tenant's tree directly rather than through an image's
    warm pool: the catalog is shared by every cellbox process on the host, and each
    opens a pool for every image that asks for one (other engineers' servers built
    this test's image and blocked on its FIFO)."""
    from cellbox.manager import warm
    from cellbox.storage import rootfs

    src = sandboxes.create(memory_mb=256)
    plant(sandboxes, src, f"HOSTFILE = {str(bait.file)!r}\n"
                          "os.unlink('/usr/bin/node'); os.symlink(HOSTFILE, '/usr/bin/node')\n"
                          "os.mkfifo('/usr/lib/x86_64-linux-gnu/libcares.so.99')\n"
                          "print(json.dumps(os.readlink('/usr/bin/node')))")
    result: list[int] = []
    with unwedge_fifos(settings, "usr/lib/x86_64-linux-gnu/libcares.so.99", after=20):
        worker = threading.Thread(target=lambda: result.append(warm.prefault(rootfs.path(settings.pool, src.id))))
        worker.start()
        worker.join(60)
    assert result and result[0] > 1 << 20, "the pre-read did not finish (or read nothing)"
    bait.assert_untouched()


# -- subvolumes a tenant makes inside its own tree ------------------------------------------

SUBVOL_CREATE = r'''
import fcntl, struct
# BTRFS_IOC_SUBVOL_CREATE = _IOW(0x94, 14, struct btrfs_ioctl_vol_args {s64 fd; char name[4088]}):
# btrfs checks only write access to the directory, no capability.
def subvol(parent, name):
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, 0x5000940E, bytearray(struct.pack("q4088s", 0, name.encode())))
    finally:
        os.close(fd)
subvol("/", "nest")
os.mkdir("/nest/d")
subvol("/nest/d", "deeper one")
print(json.dumps([os.stat(p).st_ino for p in ("/nest", "/nest/d/deeper one")]))
'''


def test_nested_subvolumes_do_not_block_destroy(sandboxes, settings) -> None:
    """A tenant can make btrfs subvolumes in its tree (no capability needed); the
    kernel refuses to delete a subvolume holding others, so destroy failed with a 500
    and left the tree behind. They are deleted first, by ID (no path of the tree is
    walked)."""
    rec = sandboxes.create()
    assert plant(sandboxes, rec, SUBVOL_CREATE) == [256, 256]  # subvolume roots
    sandboxes.destroy(rec)
    assert not (settings.pool / "sandboxes" / rec.id).exists()
    assert leftovers(settings, {rec.id}) == {}
