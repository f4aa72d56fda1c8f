"""The storage pool on a block device the admin gives us (``CELLBOX_POOL_DEVICE``).

Why: a loop file under the pool costs every in-sandbox ``fsync`` a second journal
commit on the host's filesystem (``bench/pool_backing.py``: ~1.3-1.6x of btrfs's cost
on this host, and the loop file's own page cache doubles big writes). A partition
or disk given to cellbox has no filesystem under it: btrfs's flush goes straight to
the device, so an ``fsync`` inside a sandbox is on the disk when it returns, as it is
for any program on the host.

Safety first: a device is formatted only when it carries no signature at all
(``blkid -p`` finds nothing); a device already holding btrfs is mounted as is (a
reboot, a second ``cellbox setup``); anything else is refused with the reason, so a
typo in the variable can never wipe the admin's data.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from .. import _proc
from . import btrfs
from ..errors import InternalFailure

MOUNT_OPTIONS = "noatime"  # no atime writes on reads: the same as the loop pool


def probe(device: Path) -> str:
    """The filesystem (or partition table) signature on ``device``; "" when blank.

    ``blkid -p`` reads the device itself (no cache) and exits 2 when it finds nothing."""
    res = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", "-s", "PTTYPE", str(device)],
                         capture_output=True, text=True, check=False)
    if res.returncode == 2:
        return ""
    if res.returncode != 0:
        raise InternalFailure(f"cannot read {device}: {res.stderr.strip() or f'blkid exit {res.returncode}'}")
    return res.stdout.split()[0] if res.stdout.split() else "unknown"


def check_device(device: Path) -> None:
    """Fail with a clear message unless ``device`` is a block device."""
    try:
        mode = os.stat(device).st_mode
    except FileNotFoundError:
        raise InternalFailure(f"CELLBOX_POOL_DEVICE={device} does not exist") from None
    if not stat.S_ISBLK(mode):
        raise InternalFailure(f"CELLBOX_POOL_DEVICE={device} is not a block device")


def mounted_source(mountpoint: Path) -> str | None:
    """The device mounted at ``mountpoint`` (``findmnt``), or None if nothing is."""
    res = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(mountpoint)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return None
    return res.stdout.strip().split("[")[0] or None  # "/dev/x[/subvol]" for a btrfs subvolume mount


def same_device(a: str, b: Path) -> bool:
    try:
        return os.stat(a).st_rdev == os.stat(b).st_rdev
    except OSError:
        return False


def ensure(device: Path, pool: Path, pool_image: Path) -> None:
    """Mount ``device`` (btrfs) at ``pool``, formatting it only if it is blank. Idempotent."""
    check_device(device)
    source = mounted_source(pool)
    if source is not None:
        if same_device(source, device):
            return
        # Migration is deliberate, not automatic: the loop pool holds images, sandboxes
        # and snapshots that a silent switch would hide (docs/ARCHITECTURE.md, storage).
        raise InternalFailure(f"{pool} is already mounted from {source}, not CELLBOX_POOL_DEVICE={device}: "
                              "stop the server and unmount it to switch (a new install, or migrate first)")
    if pool_image.exists():
        raise InternalFailure(f"{pool_image} exists: this data dir's pool is a loop file; "
                              "CELLBOX_POOL_DEVICE is for new installs (migrate its subvolumes first)")
    kind = probe(device)
    if kind == "":
        _proc.run_sync([*btrfs.MKFS, str(device)])
    elif kind != "btrfs":
        raise InternalFailure(f"CELLBOX_POOL_DEVICE={device} holds {kind}: cellbox formats only a blank device "
                              f"(clear it with `wipefs -a {device}` if it really is spare)")
    _proc.run_sync(["mount", "-o", MOUNT_OPTIONS, str(device), str(pool)])
