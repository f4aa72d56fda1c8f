"""A user namespace per sandbox: its id range, and its rootfs as an idmapped mount.

Every sandbox gets 65536 host ids of its own, so that root inside is an unprivileged
uid outside (a file of host root's is "nobody" in there, host root's keyring is not
its keyring, per-user kernel limits count against its own uid, ``setuid`` to a host
uid outside the range fails).

The range is a function of the sandbox's address: ``BASE + offset * 65536``, where
``offset`` is the address's place in the sandbox subnet. Why derived, not allocated:
the address is already allocated race-free across processes (a unique index on live
addresses, see ``SandboxManager._allocate``), held while the sandbox lives or is
suspended and freed with it; two live sandboxes never share an address, so they never
share a range, and a clone or a restore (new address) gets a new range by
construction. ``BASE`` (0x10000000) keeps clear of host users and of the subordinate
ranges ``/etc/subuid`` hands out (100000 upwards).

The rootfs on disk keeps ids 0..65535 (images unpack as they are, btrfs snapshots
share them): runc 1.1.5 cannot id-map a mount, so the host makes the mount itself
(``open_tree(OPEN_TREE_CLONE)`` + ``mount_setattr(MOUNT_ATTR_IDMAP)`` +
``move_mount``, kernel >= 5.12 for btrfs 5.15) and hands runc the mounted path as the
rootfs. No chown, so no per-create cost proportional to the image, and a clone with a
new range sees the same files owned the same way.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import time
from pathlib import Path
from typing import Any

from ..errors import InternalFailure, LimitExceeded

BASE = 0x10000000
SIZE = 65536
UID_MAX = 0xFFFFFFFE  # (uid_t)-1 is "no uid"

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442  # x86_64
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000
_MNT_DETACH = 2
_CLONE_NEWUSER = 0x10000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def host_base(subnet: ipaddress.IPv4Network, address: str) -> int:
    """The first host id of the sandbox that holds ``address``."""
    offset = int(ipaddress.IPv4Address(address)) - int(subnet.network_address)
    base = BASE + offset * SIZE
    if not 0 < offset or base + SIZE - 1 > UID_MAX:
        raise LimitExceeded(f"no user id range left for address {address} (the subnet is larger than "
                            f"{(UID_MAX + 1 - BASE) // SIZE} sandboxes)")
    return base


def mappings(base: int) -> dict[str, Any]:
    """``linux.uidMappings`` / ``gidMappings`` of the bundle: 0..65535 -> base.."""
    one = [{"containerID": 0, "hostID": base, "size": SIZE}]
    return {"uidMappings": one, "gidMappings": list(one)}


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise InternalFailure(f"{what}: {os.strerror(err)}")
    return ret


def _userns_fd(base: int) -> int:
    """An fd of a user namespace mapping 0..65535 to ``base``..: a forked child enters
    a new one, we write its maps and keep its ns file open.

    A fork, not ``unshare -U sleep``: no exec, so ~1 ms instead of ~25 ms (an exec of
    two binaries) on this machine. The child only makes syscalls before ``_exit``, so a
    fork of the threaded server is safe. mount_setattr only reads the mapping from the
    namespace, so the child can go right away; the namespace lives on as long as the
    mount refers to it.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: unshare, report, wait to be killed
        try:
            os.close(r)
            os.write(w, b"1" if _libc.unshare(_CLONE_NEWUSER) == 0 else b"0")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(w)
    try:
        if os.read(r, 1) != b"1":
            raise InternalFailure("could not make a user namespace for the idmapped rootfs")
        line = f"0 {base} {SIZE}\n".encode()
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "wb", buffering=0) as f:
                f.write(line)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(r)
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def mount_idmapped(source: Path, target: Path, base: int, extra_attrs: int = 0) -> None:
    """Mount ``source`` at ``target`` with its ids shifted by ``base`` (0 -> base);
    ``extra_attrs``: more ``MOUNT_ATTR_*`` bits (a volume's ``ro,nosuid,nodev``).

    Idempotent: a ``target`` that already is a mount point is left as it is (a resume
    after a server restart finds the mount of the first start still there).
    """
    target.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(target):
        return
    ns_fd = _userns_fd(base)
    tree_fd = -1
    try:
        tree_fd = _check(_libc.syscall(_SYS_OPEN_TREE, -100, os.fsencode(source),
                                       _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC), f"open_tree({source})")
        attr = _MountAttr(attr_set=_MOUNT_ATTR_IDMAP | extra_attrs, userns_fd=ns_fd)
        _check(_libc.syscall(_SYS_MOUNT_SETATTR, tree_fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                             ctypes.sizeof(attr)), "mount_setattr(MOUNT_ATTR_IDMAP)")
        _check(_libc.syscall(_SYS_MOVE_MOUNT, tree_fd, b"", -100, os.fsencode(target),
                             _MOVE_MOUNT_F_EMPTY_PATH), f"move_mount({target})")
    finally:
        os.close(ns_fd)
        if tree_fd >= 0:
            os.close(tree_fd)


def unmount(target: Path) -> None:
    """Detach the idmapped mount at ``target`` (if any) and remove the directory."""
    while os.path.ismount(target):
        if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise InternalFailure(f"umount {target}: {os.strerror(err)}")
    try:
        target.rmdir()
    except OSError:  # gone already; or not empty and not a mount: the state dir's removal takes it
        pass


def mount_path(state_dir: Path) -> Path:
    """Where a sandbox's idmapped rootfs is mounted: inside its state dir, so the dir's
    own removal is the last step (teardown unmounts first)."""
    return state_dir / "rootfs"


def restrict(path: Path, base: int) -> None:
    """Make ``path`` (a state or image directory) reachable by host root and by this
    sandbox's root only: root-owned, group the sandbox's root (``base``), mode 0750.

    Why the group: runc's init and CRIU's restore walk these directories after
    entering the sandbox's user namespace (the idmapped rootfs is mounted in the state
    dir; CRIU opens the images from inside: a 0700 dir fails with "Unable to open
    timens-0.img"), so the sandbox's root must be able to traverse them, and no other
    sandbox's ids may.
    """
    os.chown(path, 0, base)
    os.chmod(path, 0o750)
