"""The storage pool: one btrfs filesystem holding images, sandboxes and snapshots.

If ``data_dir/pool`` is already on btrfs (a real disk) it is used as is; with
``CELLBOX_POOL_DEVICE`` the admin's block device is mounted there (``pool_device.py``:
formatted only when blank; no loop file, so an ``fsync`` costs what it does on the
device); otherwise a sparse file ``data_dir/pool.img`` is formatted and loop-mounted there. Quotas are
enabled once, so that each sandbox's subvolume can carry a ``disk_mb`` limit.

Layout inside the pool::

    images/<digest>       read-only subvolume: an image's unpacked root filesystem
    sandboxes/<id>        writable snapshot of an image: one sandbox's root filesystem
    snapshots/<id>        read-only snapshots (memory-state issue)
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import _proc
from ..config import Settings
from ..errors import InternalFailure
from . import btrfs, pool_device

SUBDIRS = ("images", "sandboxes", "snapshots", "tmp")


BTRFS_SUPER_MAGIC = 0x9123683E


def is_btrfs(path: Path) -> bool:
    """Whether ``path`` is on btrfs. Called on every create (``check_pool``), so it
    asks the kernel directly (statfs) instead of starting ``stat -f``, which cost a
    process spawn and blocked the event loop on the create path."""
    import ctypes

    buf = ctypes.create_string_buffer(120)  # struct statfs; f_type is its first field
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(str(path).encode(), buf) != 0:
        return False
    return ctypes.c_long.from_buffer(buf).value == BTRFS_SUPER_MAGIC


def is_mountpoint(path: Path) -> bool:
    return os.path.ismount(path)


def ensure_pool(settings: Settings) -> Path:
    """Create, format and mount the pool if needed; idempotent. Returns the pool path."""
    pool = settings.pool
    pool.mkdir(parents=True, exist_ok=True)
    if settings.pool_device:  # speed (issue 15): the admin's device instead of a loop file
        pool_device.ensure(Path(settings.pool_device), pool, settings.pool_image)
    elif not is_btrfs(pool):
        image = settings.pool_image
        if not image.exists():
            with open(image, "wb") as f:
                f.truncate(settings.pool_size_gb << 30)
            _proc.run_sync([*btrfs.MKFS, str(image)])
        # A loop mount is a mount like any other: after a host reboot, `cellbox setup`
        # (or the server at start-up) mounts it again from the same file.
        _proc.run_sync(["mount", "-o", "loop,noatime", str(image), str(pool)])
        if not is_btrfs(pool):
            raise InternalFailure(f"{pool} is not btrfs after mounting {image}")
    btrfs.enable_simple_quota(pool)
    for sub in SUBDIRS:
        (pool / sub).mkdir(exist_ok=True)
    return pool


def release_pool(settings: Settings) -> str:
    """Unmount the pool (its loop device goes with it: ``mount -o loop`` sets autoclear).

    ``make test`` calls this after the suite, so a test run leaves no mount or loop
    device on the host; the next ``cellbox setup`` (``make run`` runs it) mounts the
    same file again with everything in it. Refused while a sandbox's root filesystem is
    in the pool: a running server's sandboxes would lose their disk. ``umount`` itself
    refuses (EBUSY) anything else still using it; nothing is ever unmounted lazily.
    """
    pool = settings.pool
    if not is_mountpoint(pool):
        return f"{pool} is not mounted"
    held = sorted(os.listdir(pool / "sandboxes")) if (pool / "sandboxes").is_dir() else []
    if held:
        raise InternalFailure(f"not released: {len(held)} sandbox(es) still have their root filesystem in {pool}")
    _proc.run_sync(["umount", str(pool)])
    return f"{pool} unmounted"


def check_pool(settings: Settings) -> Path:
    """Fail with a clear message if the pool is not mounted (setup has not run)."""
    if not is_btrfs(settings.pool):
        raise InternalFailure(f"storage pool {settings.pool} is not mounted: run `cellbox setup`")
    return settings.pool
