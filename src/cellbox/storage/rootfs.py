"""Per-sandbox root filesystems: a writable btrfs snapshot of the image, size-capped.

Creating one costs a subvolume snapshot (~10 ms, independent of the image's size) and
a quota limit (~2 ms). ``disk_mb`` is the size of the whole root disk, image data
included, as on a block device of that size: simple quotas charge only what the
sandbox writes, so its limit is ``disk_mb`` minus the image's size. Writes beyond it
fail inside the sandbox with EDQUOT, and the host's other filesystems are unaffected.
"""

from __future__ import annotations

from pathlib import Path

from . import btrfs


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
    """
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    for name in ("hostname", "hosts", "resolv.conf"):
        target = etc / name
        if target.is_symlink():
            target.unlink()
    (etc / "hostname").write_text(hostname + "\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
    (etc / "resolv.conf").write_text(f"nameserver {nameserver}\noptions edns0\n")


async def remove(pool: Path, sandbox_id: str) -> None:
    await btrfs.delete(path(pool, sandbox_id))
