"""The runtime as the manager's ``ports.Runtime``: runc run, CRIU restore, destroy, state,
and the idmapped rootfs mount of a user-namespaced container.

A thin face over ``runc.py`` and ``checkpoint.py`` so the manager depends on four
calls, not on how they are made (and tests can hand it a fake).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import _proc
from . import checkpoint, lazy_restore, lazymig, nethook, userns
from .runc import Runc, State


class NodeRuntime:
    def __init__(self, runc: Runc, bin_dir: Path) -> None:
        self.runc = runc
        self.bin_dir = bin_dir
        self._nethook: Path | None = None
        self.tails = lazy_restore.Tails()

    async def run(self, container_id: str, bundle: Path) -> int:
        return await self.runc.run_detached(container_id, bundle)

    async def restore(self, container_id: str, bundle: Path, images: Path, work: Path, *, lazy: bool = False,
                      cleanup: Sequence[Path] = (), remote: dict[str, Any] | None = None) -> int:
        """CRIU restore; ``cleanup`` is removed once the images are no longer read (at
        once for an eager restore, after the page stream for a lazy one).

        With ``remote`` (live migration: the source's page server), memory is fetched
        from there by a ``criu lazy-pages`` daemon that outlives this call
        (``lazymig.DAEMONS``, keyed by ``remote["images"]``, which it reads)."""
        if remote is not None:
            return await self._restore_remote(container_id, bundle, images, work, cleanup, remote)
        if lazy:
            return await self.tails.restore(self.runc, container_id, bundle, images, work, cleanup)
        try:
            return await checkpoint.restore(self.runc, container_id, bundle, images, work)
        finally:
            for p in cleanup:
                await asyncio.to_thread(shutil.rmtree, p, True)

    async def settled(self, container_id: str) -> None:
        """Wait until no lazy restore is streaming pages into the container (before a dump)."""
        await self.tails.settled(container_id)

    async def settle_all(self) -> None:
        """Wait for every lazy restore's page stream (tests and shutdown)."""
        await self.tails.settle_all()

    async def _restore_remote(self, container_id: str, bundle: Path, images: Path, work: Path,
                              cleanup: Sequence[Path], remote: dict[str, Any]) -> int:
        lazy = await lazymig.start_remote_daemon(Path(remote["images"]), work, remote["address"],
                                                 int(remote["port"]), list(remote["tls_args"]))
        try:
            return await checkpoint.restore(self.runc, container_id, bundle, images, work, lazy=lazy)
        except BaseException:
            await lazy.kill()
            raise
        finally:
            for p in cleanup:
                await asyncio.to_thread(shutil.rmtree, p, True)

    async def destroy(self, container_id: str) -> None:
        await self.runc.destroy(container_id)
        await self.tails.drop(container_id)

    async def state(self, container_id: str) -> State | None:
        return await self.runc.state(container_id)

    async def list_ids(self) -> list[str]:
        return await self.runc.list_ids()

    async def mount_idmapped(self, source: Path, target: Path, base: int) -> None:
        await asyncio.to_thread(userns.mount_idmapped, source, target, base)

    async def unmount(self, target: Path) -> None:
        await asyncio.to_thread(userns.unmount, target)

    async def prepare(self) -> None:
        """Build the network hook if this host has none for the current source: the cc
        run (~120 ms) otherwise lands in the first create after a start, on a node
        often a live migration's restore (bench/migrate.py: its target's "netns 156")."""
        if self._nethook is None:
            self._nethook = await asyncio.to_thread(nethook.ensure, self.bin_dir)

    async def netns_hook(self, wiring: list[str], base: int) -> dict[str, Any]:
        """The bundle's ``hooks``: the prestart hook that wires the netns runc makes
        (compiled on first use, ``nethook.ensure``)."""
        await self.prepare()
        assert self._nethook is not None
        return nethook.hooks(self._nethook, wiring, base)

    async def set_hostname(self, pid: int, hostname: str) -> None:
        """Set the hostname in ``pid``'s UTS namespace (a restore brings back the dumped one)."""
        await _proc.run(["nsenter", "--target", str(pid), "--uts", "hostname", hostname])
