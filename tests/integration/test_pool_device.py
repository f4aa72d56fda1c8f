"""CELLBOX_POOL_DEVICE: the pool on a block device the admin gives us.

A loop device over a scratch file stands in for the partition (this host has no spare
disk). What must hold: a blank device becomes the pool (btrfs, simple quotas, the
layout), a second setup mounts it again without formatting, ``disk_mb`` and O(1)
snapshots work on it, data fsync'd in a sandbox's subvolume is on the device, and a
device that holds anything else -- or a path that is not a block device -- is refused
with the reason and left untouched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellbox.config import load
from cellbox.errors import InternalFailure
from cellbox.storage import btrfs, pool, pool_device, rootfs

pytestmark = pytest.mark.root


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Path]:
    """A 1 GiB loop device over a sparse file; detached (and the pool unmounted) after."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(b"")
    os.truncate(backing, 1 << 30)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        yield Path(dev)
    finally:
        mnt = tmp_path / "data" / "pool"
        if os.path.ismount(mnt):
            subprocess.run(["umount", str(mnt)], check=True)
        subprocess.run(["losetup", "-d", dev], check=True)


def settings_for(tmp_path: Path, dev: Path | str):
    return dataclasses.replace(load(), data_dir=tmp_path / "data", pool_device=str(dev))


def test_blank_device_becomes_the_pool_and_is_mounted_again_unformatted(tmp_path, device):
    s = settings_for(tmp_path, device)
    mnt = pool.ensure_pool(s)
    assert pool_device.same_device(pool_device.mounted_source(mnt) or "", device)
    assert pool.is_btrfs(mnt) and btrfs.quota_mode(mnt) == "squota"
    assert all((mnt / sub).is_dir() for sub in pool.SUBDIRS)
    assert not s.pool_image.exists(), "no loop file is made when a device is given"
    # The pool's format (storage/btrfs.py MKFS): 4 KiB nodes, one copy of metadata.
    sb = subprocess.run(["btrfs", "inspect-internal", "dump-super", str(device)],
                        check=True, capture_output=True, text=True).stdout
    assert any(line.split() == ["nodesize", "4096"] for line in sb.splitlines()), sb
    usage = subprocess.run(["btrfs", "filesystem", "df", str(mnt)], check=True, capture_output=True, text=True).stdout
    assert "Metadata, single" in usage, usage
    (mnt / "images" / "marker").write_text("kept")
    pool.ensure_pool(s)  # idempotent while mounted
    subprocess.run(["umount", str(mnt)], check=True)
    pool.ensure_pool(s)  # after a reboot: mounted again, not formatted
    assert (mnt / "images" / "marker").read_text() == "kept"


def test_disk_limit_snapshots_and_fsync_on_the_device(tmp_path, device):
    mnt = pool.ensure_pool(settings_for(tmp_path, device))
    image = mnt / "images" / "img"

    async def build() -> Path:
        await btrfs.create(image)
        (image / "etc").mkdir()
        (image / "etc" / "os-release").write_text("test\n")
        await btrfs.set_readonly(image)
        return await rootfs.create(mnt, "sbx", image, 64)

    box = asyncio.run(build())
    assert (box / "etc" / "os-release").read_text() == "test\n"  # a snapshot of the image
    # fsync'd data is on the device, below btrfs and its page cache: read it back raw.
    marker = os.urandom(16).hex().encode() * 4096
    fd = os.open(box / "durable.bin", os.O_CREAT | os.O_WRONLY)
    os.write(fd, marker)
    os.fsync(fd)
    os.close(fd)
    assert marker[:4096] in _read_raw(device)
    # disk_mb holds: writing far past 64 MiB fails with a quota error, not later.
    with pytest.raises(OSError) as exc, open(box / "fill", "wb") as f:
        for _ in range(256):
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
    assert exc.value.errno in (errno.EDQUOT, errno.ENOSPC)
    asyncio.run(rootfs.remove(mnt, "sbx"))
    asyncio.run(btrfs.delete(image))


def _read_raw(device: Path) -> bytes:
    """The device's bytes, bypassing its page cache (O_DIRECT, aligned reads)."""
    import mmap

    fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    buf, chunks = mmap.mmap(-1, 1 << 20), []
    try:
        while (n := os.readv(fd, [buf])) > 0:
            chunks.append(bytes(buf[:n]))
    finally:
        os.close(fd)
    return b"".join(chunks)


def test_device_holding_another_filesystem_is_refused_and_untouched(tmp_path, device):
    subprocess.run(["mkfs.ext4", "-q", str(device)], check=True)
    s = settings_for(tmp_path, device)
    with pytest.raises(InternalFailure, match="holds ext4"):
        pool.ensure_pool(s)
    assert pool_device.probe(device) == "ext4"
    assert not os.path.ismount(s.pool)


@pytest.mark.parametrize("what", ["regular file", "character device", "missing"])
def test_path_that_is_not_a_block_device_is_refused(tmp_path, what):
    target = {"regular file": tmp_path / "file", "character device": Path("/dev/null"),
              "missing": tmp_path / "nope"}[what]
    if what == "regular file":
        target.write_bytes(b"\0" * 4096)
    s = settings_for(tmp_path, target)
    expect = "does not exist" if what == "missing" else "not a block device"
    with pytest.raises(InternalFailure, match=expect):
        pool.ensure_pool(s)
    assert not os.path.ismount(s.pool)
    if what == "regular file":
        assert target.read_bytes() == b"\0" * 4096


def test_existing_loop_pool_or_other_mount_is_not_switched_silently(tmp_path, device):
    s = settings_for(tmp_path, device)
    s.data_dir.mkdir()
    s.pool_image.write_bytes(b"")  # a data dir whose pool is a loop file
    with pytest.raises(InternalFailure, match="new installs"):
        pool.ensure_pool(s)
    s.pool_image.unlink()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(s.pool)], check=True)
    try:
        with pytest.raises(InternalFailure, match="already mounted from tmpfs"):
            pool.ensure_pool(s)
    finally:
        subprocess.run(["umount", str(s.pool)], check=True)
    assert pool_device.probe(device) == "", "the device was not formatted"
