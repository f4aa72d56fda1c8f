"""Volumes on disk: a btrfs subvolume per volume, read-only snapshots as its versions.

Layout, all in the pool, all named by IDs we made (never by a tenant's path)::

    pool/volumes/<volume id>/head                  the live tree (writable subvolume)
    pool/volumes/<volume id>/versions/<version id> read-only snapshots of head

Why btrfs subvolumes (as the sandboxes' root filesystems): a version is a snapshot,
O(1) whatever the size (one ioctl; no copy), and a fork is a writable snapshot of head
or of a version, so forks and versions share every unchanged extent. A volume's size
limit is a simple-quota limit on ``head`` (``btrfs.set_limit``): with simple quotas an
extent is charged to the subvolume that wrote it, so a fork's limit counts what the
fork wrote, not what it shares with its origin (documented in docs/api.md).

Nothing here walks into a volume: create, snapshot and delete are btrfs calls on the
subvolume roots (``btrfs.delete`` removes subvolumes a tenant nested inside by ID), so
links a tenant planted in a volume are never followed on the host.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import btrfs


def volume_dir(pool: Path, volume_id: str) -> Path:
    return pool / "volumes" / volume_id


def head(pool: Path, volume_id: str) -> Path:
    return volume_dir(pool, volume_id) / "head"


def version(pool: Path, volume_id: str, version_id: str) -> Path:
    return volume_dir(pool, volume_id) / "versions" / version_id


def _make_dirs(pool: Path, volume_id: str) -> Path:
    top = pool / "volumes"
    top.mkdir(mode=0o700, exist_ok=True)  # host root's only: sandboxes reach volumes through mounts
    vdir = volume_dir(pool, volume_id)
    vdir.mkdir(mode=0o700)
    (vdir / "versions").mkdir(mode=0o700)
    return vdir


async def create(pool: Path, volume_id: str, size_mb: int) -> Path:
    """An empty volume of ``size_mb`` MiB; its root is owned by the sandbox's root (0:0
    on disk, shifted by the idmapped mount) with mode 0755."""
    vdir = _make_dirs(pool, volume_id)
    try:
        await btrfs.create(vdir / "head")
        os.chmod(vdir / "head", 0o755)
        btrfs.set_limit(vdir / "head", size_mb)
    except BaseException:
        await remove(pool, volume_id)
        raise
    return vdir / "head"


async def fork(pool: Path, source: Path, volume_id: str, size_mb: int) -> Path:
    """A new writable volume from ``source`` (another volume's head or one of its
    versions): a btrfs snapshot, O(1)."""
    vdir = _make_dirs(pool, volume_id)
    try:
        await btrfs.snapshot(source, vdir / "head")
        btrfs.set_limit(vdir / "head", size_mb)
    except BaseException:
        await remove(pool, volume_id)
        raise
    return vdir / "head"


async def snapshot(pool: Path, volume_id: str, version_id: str) -> Path:
    """Freeze the volume's head as a read-only version (O(1))."""
    dest = version(pool, volume_id, version_id)
    await btrfs.snapshot(head(pool, volume_id), dest, readonly=True)
    return dest


async def remove_version(pool: Path, volume_id: str, version_id: str) -> None:
    path = version(pool, volume_id, version_id)
    if path.exists():
        await btrfs.set_readonly(path, False)  # a read-only subvolume holding nested ones cannot lose them
        await btrfs.delete(path)


async def remove(pool: Path, volume_id: str) -> None:
    """Delete a volume, its versions first; idempotent."""
    vdir = volume_dir(pool, volume_id)
    versions = vdir / "versions"
    if versions.is_dir():
        for name in os.listdir(versions):
            await remove_version(pool, volume_id, name)
        versions.rmdir()
    await btrfs.delete(vdir / "head")
    if vdir.exists():
        vdir.rmdir()


async def used_bytes(pool: Path, volume_id: str) -> int:
    """Bytes charged to the volume (what it wrote, simple quotas)."""
    return await btrfs.referenced_bytes(head(pool, volume_id))
