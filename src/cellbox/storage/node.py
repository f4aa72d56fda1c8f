"""Storage as the manager's ``ports.Storage``: rootfs subvolumes in the pool, with quotas."""

from __future__ import annotations

from pathlib import Path

from . import rootfs


class NodeStorage:
    def __init__(self, pool: Path) -> None:
        self.pool = pool

    def rootfs_path(self, sandbox_id: str) -> Path:
        return rootfs.path(self.pool, sandbox_id)

    async def create_rootfs(self, sandbox_id: str, source: Path, writable_mb: int) -> Path:
        """A writable snapshot of ``source`` (an image's subvolume or a snapshot's
        rootfs) holding at most ``writable_mb`` MiB more."""
        return await rootfs.create(self.pool, sandbox_id, source, writable_mb)

    async def remove_rootfs(self, sandbox_id: str) -> None:
        await rootfs.remove(self.pool, sandbox_id)

