"""Per-sandbox root filesystems: a writable btrfs snapshot of the image, size-capped.

Creating one costs a subvolume snapshot (~10 ms, independent of the image's size) and
a quota limit (~2 ms). ``disk_mb`` is the size of the whole root disk, image data
included, as on a block device of that size: simple quotas charge only what the
sandbox writes, so its limit is ``disk_mb`` minus the image's size. Writes beyond it
fail inside the sandbox with EDQUOT, and the host's other filesystems are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import RootfsUnusable
from . import btrfs, inroot


def path(pool: Path, sandbox_id: str) -> Path:
    return pool / "sandboxes" / sandbox_id


async def create(pool: Path, sandbox_id: str, image_rootfs: Path, writable_mb: int) -> Path:
    """Snapshot the image for a sandbox that may write ``writable_mb`` MiB."""
    dest = path(pool, sandbox_id)
    await btrfs.snapshot(image_rootfs, dest)
    try:
        await btrfs.limit(dest, writable_mb)
    except BaseException:
        await btrfs.delete(dest)
        raise
    return dest


def write_identity(rootfs: Path, *, hostname: str, nameserver: str) -> None:
    """Files a sandbox needs to know who it is and how to resolve names.

    Written into the sandbox's own subvolume (not bind-mounted), so they are part of
    its filesystem for snapshots and need no extra mounts for CRIU to track.

    The tree is the tenant's (a clone or restore writes into a copy of it), so every
    path resolves inside it (``inroot``): ``/etc`` may be a link, followed only as far
    as the sandbox itself would see it; each file is replaced by a new one, never
    opened, whatever is in its place (a link, a FIFO, a device node). A tree where
    this is impossible (``/etc`` a dangling link or a loop, a directory named
    ``hosts``) is refused with a clear error naming the path inside the sandbox.
    """
    files = {
        "hostname": hostname + "\n",
        "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n",
        "resolv.conf": f"nameserver {nameserver}\noptions edns0\n",
    }
    where = "/etc"
    try:
        with inroot.Root(rootfs) as root:
            root.mkdir("etc", exist_ok=True)
            for name, text in files.items():
                where = f"/etc/{name}"
                root.write_file(f"etc/{name}", text.encode())
    except OSError as exc:
        # The message names the path as the sandbox sees it, never the host's.
        raise RootfsUnusable(f"has no usable {where}: {exc.strerror or exc} "
                             f"(a link leading nowhere inside it, a loop, or not a directory/file)") from None


def prepare_mount_points(rootfs: Path, destinations: Iterable[str]) -> None:
    """Make each mount destination a real directory inside the tree, before the runtime
    (runc, or CRIU at a restore) mounts over it.

    A tree can come with them replaced (a hostile image or snapshot: ``/.cellbox`` a
    link to a host path, ``/proc`` a file). What sits at a mount point is hidden by
    the mount, so replacing it loses nothing the tenant can see, and neither runc nor
    CRIU is then asked to follow a tenant's link (CRIU refused such a restore with a
    500 before). No link is followed on the way (``make_real_dirs``).
    """
    try:
        with inroot.Root(rootfs) as root:
            for dest in destinations:
                root.make_real_dirs(dest)
    except OSError as exc:
        raise RootfsUnusable(f"cannot hold its mount points: {exc.strerror or exc}") from None


async def remove(pool: Path, sandbox_id: str) -> None:
    await btrfs.delete(path(pool, sandbox_id))
