"""Mount a volume into a running sandbox's mount namespace, or take it out, from the host.

The sandbox cannot mount anything itself (no ``CAP_SYS_ADMIN``, seccomp), and runc
only mounts at start, so the host does it, the same way for every case (a create's
``file_systems``, a warm claim, an attach, a resume, a restore, a clone):

1. ``open_tree(OPEN_TREE_CLONE)``, in the host's namespace, of the sandbox's host-side
   mount of the volume (a detached copy, not yet anywhere; the host-side mount, :func:`host_mount`: idmapped into the
   sandbox's id range like its rootfs, ``userns.py``, so files on disk owned 0..65535
   show as the sandbox's root and users; ``ro``; ``nosuid,nodev``);
2. ``mount_setattr`` sets ``nosuid,nodev`` (and ``ro``) again on the clone;
3. ``setns`` into the sandbox's mount namespace; the target is opened from its root
   with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
   RESOLVE_NO_XDEV)``: no link of the tenant's is followed and no mount crossed, so the
   volume lands on the sandbox's own root filesystem at exactly the path asked for;
4. ``move_mount`` of the detached tree onto that fd.

Detach opens the target's parent the same way (links refused), checks that the entry
there is the volume's subvolume root (its device number and inode 256), then
``fchdir(parent)`` + ``umount2(name, UMOUNT_NOFOLLOW)``: a mount point cannot be renamed
or replaced, so it unmounts that very mount, never a path the tenant re-pointed. A
volume still in use (open files, a working directory) is not detached: 409 busy.

Why a subprocess (``python -m cellbox.runtime.volmount``): ``setns`` into a mount
namespace needs a single-threaded process (the server has threads), and the change of
root must not touch the server. ~30 ms of interpreter start, paid on attach/detach only.
Why ctypes: glibc 2.36 has no wrappers for the new mount API (as in ``userns.py``).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR, _SYS_OPENAT2 = 428, 429, 442, 437  # x86_64
_OPEN_TREE_CLONE = 1
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH, _MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_MOUNT_ATTR_IDMAP = 0x00100000
_CLONE_NEWNS = 0x00020000
_MNT_DETACH, _UMOUNT_NOFOLLOW = 2, 8
_RESOLVE_NO_XDEV, _RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x1, 0x2, 0x4, 0x8
SUBVOL_ROOT_INO = 256


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class MountError(Exception):
    """The helper's one-line reason (``errno name: what``), e.g. a link at the target."""


@dataclass(frozen=True)
class Job:
    op: str  # "attach" | "detach"
    pid: int  # the sandbox's init, for its namespaces
    target: str  # absolute path inside the sandbox
    source: str = ""  # attach: the subvolume on the host
    read_only: bool = False
    expect_dev: int = 0  # detach: st_dev of the volume's subvolume


def run(job: Job, timeout: float = 30) -> None:
    """Run ``job`` in a fresh helper process; raises :class:`MountError` on failure."""
    try:
        res = subprocess.run([sys.executable, "-m", "cellbox.runtime.volmount", json.dumps(asdict(job))],
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:  # killed by run(); a mount either happened or did not
        raise MountError(f"the mount helper did not finish within {timeout:g}s") from None
    if res.returncode != 0:
        raise MountError((res.stderr.strip().splitlines() or ["the mount helper failed"])[-1])


# -- in the helper process -------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _ok(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise MountError(f"{os.strerror(err)}: {what}")
    return ret


def _open_target(target: str, *, cross_mounts: bool) -> int:
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    if not target.strip("/"):
        return root
    resolve = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
    if not cross_mounts:
        resolve |= _RESOLVE_NO_XDEV
    how = _OpenHow(os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, resolve)
    try:
        return _ok(_libc.syscall(_SYS_OPENAT2, root, os.fsencode(target.lstrip("/")), ctypes.byref(how),
                                 ctypes.sizeof(how)), f"open {target} in the sandbox (a link, or not a directory)")
    finally:
        os.close(root)


def _enter(pid: int) -> None:
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _ok(_libc.setns(fd, _CLONE_NEWNS), "setns into the sandbox's mount namespace")
    finally:
        os.close(fd)


def _attach(job: Job) -> None:
    tree = _ok(_libc.syscall(_SYS_OPEN_TREE, -100, os.fsencode(job.source), _OPEN_TREE_CLONE | os.O_CLOEXEC),
               f"open_tree {job.source}")
    # The source is the sandbox's host-side mount (host_mount): its idmap and ``ro`` come
    # with the clone; these flags are set again so a wrong source can only be stricter.
    attrs = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | (_MOUNT_ATTR_RDONLY if job.read_only else 0)
    attr = _MountAttr(attr_set=attrs)
    _ok(_libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
        "mount_setattr")
    _enter(job.pid)
    target = _open_target(job.target, cross_mounts=False)
    _ok(_libc.syscall(_SYS_MOVE_MOUNT, tree, b"", target, b"", _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH),
        f"move_mount onto {job.target}")


def _detach(job: Job) -> None:
    _enter(job.pid)
    moved = MountError(f"the volume is no longer at {job.target} (moved inside the sandbox, or a link put "
                       "in its way); it stays mounted, and held, until the sandbox ends")
    parent_path, name = job.target.rsplit("/", 1)
    try:
        parent = _open_target(parent_path or "/", cross_mounts=True)
    except MountError:
        raise moved from None
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        raise moved from None
    # Not the volume's root there: never unmount whatever else is (and never say it is
    # gone: the tenant could have moved the mount and kept writing through it).
    if st.st_dev != job.expect_dev or st.st_ino != SUBVOL_ROOT_INO:
        raise moved
    # From the parent we hold: a mount point cannot be renamed or replaced, so ``name``
    # there is the mount we checked. Not MNT_DETACH: a volume a process still uses
    # (open file, cwd) stays, or that process would go on writing to a volume the
    # one-writer rule then gives to another sandbox.
    os.fchdir(parent)
    if _libc.umount2(os.fsencode(name), _UMOUNT_NOFOLLOW) != 0:
        err = ctypes.get_errno()
        if err == errno.EBUSY:
            raise MountError(f"{job.target} is busy: a process in the sandbox has a file open or its working "
                             "directory there (end it first)")
        raise MountError(f"{os.strerror(err)}: umount {job.target}")
    os.chdir("/")


def main(argv: list[str]) -> int:
    job = Job(**json.loads(argv[1]))
    try:
        (_attach if job.op == "attach" else _detach)(job)
    except (MountError, OSError) as exc:
        print(f"{job.op} {job.target}: {exc}", file=sys.stderr)
        return 1
    return 0


def subvolume_dev(path: Path) -> int:
    return os.stat(path).st_dev


# -- on the host (in the server) ------------------------------------------------------------

def host_mount(source: Path, target: Path, base: int | None, read_only: bool) -> None:
    """The sandbox's own host-side mount of a volume at ``target`` (under the run dir):
    idmapped into the range starting at ``base`` (None: no user namespace), ``ro`` when
    asked, always ``nosuid,nodev``. Idempotent (a mount already there is kept).

    Why a host-side mount per sandbox and volume: it is what the sandbox's mount is
    cloned from (the idmap and ``ro`` come with the clone), and what CRIU binds at a
    restore (runc hands it over as the bind mount's source), so a resumed, restored or
    cloned sandbox gets the same volume, by reference, with the same ids and mode.
    """
    attrs = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | (_MOUNT_ATTR_RDONLY if read_only else 0)
    if base is not None:
        from .userns import mount_idmapped  # runtime-internal; userns imports nothing of ours

        mount_idmapped(source, target, base, attrs)
        return
    target.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(target):
        return
    tree = _ok(_libc.syscall(_SYS_OPEN_TREE, -100, os.fsencode(source), _OPEN_TREE_CLONE | os.O_CLOEXEC),
               f"open_tree {source}")
    try:
        attr = _MountAttr(attr_set=attrs)
        _ok(_libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
            "mount_setattr")
        _ok(_libc.syscall(_SYS_MOVE_MOUNT, tree, b"", -100, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH),
            f"move_mount onto {target}")
    finally:
        os.close(tree)


def host_unmount(target: Path) -> None:
    """Detach a host-side volume mount and remove its directory; idempotent. Never a
    recursive removal: below a mount point is a tenant's volume."""
    while os.path.ismount(target):
        if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
            raise MountError(f"{os.strerror(ctypes.get_errno())}: umount {target}")
    try:
        target.rmdir()
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv))
