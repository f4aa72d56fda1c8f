"""Restores whose memory streams in after the sandbox answers (CRIU lazy pages).

Why (issue 15, memory state): an eager ``runc restore`` copies every page of the
dump into the new tasks before it returns, so a restore from a 1 GiB memory snapshot
cost ~1 s and a clone's restore grew with the source's memory. With ``--lazy-pages``
(userfaultfd) runc returns once the process tree is rebuilt; a ``criu lazy-pages``
daemon (root, on the host) serves each page on first touch and pushes all the rest
in the background. Resume has done this since issue 9; this module gives the same to
restores into a *new* identity (restore from a snapshot, clone, pre-booted images).

What a lazy restore owes until its daemon exits ("the tail"):

* the images it reads stay: callers hand a private directory of hard links (the
  snapshot or the clone's tmpfs capture may be deleted meanwhile) and the tail
  removes it with the work directory;
* no dump of that container may start (a dump would race the pages still being
  written into it): ``settled(cid)`` waits for the tail, and every dump path calls it;
* a tail never outlives its container: ``drop(cid)`` (destroy) kills the daemon, and
  a daemon that has not finished after ``TAIL_TIMEOUT`` is killed and logged.

``CELLBOX_LAZY_RESTORE=0`` restores eagerly as before (read per call, for the benches'
side-by-side runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .. import faults
from . import checkpoint
from .runc import Runc

log = logging.getLogger(__name__)
TAIL_TIMEOUT = 300.0  # seconds; 1 GiB streams in within ~2 s on this host


def enabled() -> bool:
    return os.environ.get("CELLBOX_LAZY_RESTORE", "1") == "1"


class Tails:
    """The lazy restores of this process whose pages are still streaming, by container."""

    def __init__(self) -> None:
        self._tails: dict[str, tuple[checkpoint.LazyPages, asyncio.Task[None]]] = {}

    async def restore(self, runc: Runc, container_id: str, bundle: Path, images: Path, work: Path,
                      cleanup: Sequence[Path]) -> int:
        """``runc restore --lazy-pages`` from ``images``; returns the init's PID once the
        tree is rebuilt. ``cleanup`` (the private image links, the work dir) is removed
        when the daemon is done, or at once if the restore fails."""
        await self.settled(container_id)  # an earlier tail of the same ID (a retried create)
        daemon = await checkpoint.LazyPages.start(images, work)
        try:
            faults.hit("restore.after_lazy_pages")
            pid = await checkpoint.restore(runc, container_id, bundle, images, work, lazy=daemon)
        except BaseException:
            await daemon.kill()
            await asyncio.to_thread(_remove, cleanup)
            raise
        task = asyncio.get_running_loop().create_task(self._tail(container_id, daemon, list(cleanup)))
        self._tails[container_id] = (daemon, task)
        return pid

    async def _tail(self, container_id: str, daemon: checkpoint.LazyPages, cleanup: list[Path]) -> None:
        try:
            try:
                code = await asyncio.wait_for(daemon.wait(), TAIL_TIMEOUT)
            except TimeoutError:
                log.warning("lazy pages of %s still streaming after %ss: daemon killed", container_id, TAIL_TIMEOUT)
                await daemon.kill()
                code = -1
            if code != 0:
                log.warning("lazy-pages of %s exited %s: %s", container_id, code,
                            checkpoint._log_errors(daemon.work / "lazy-pages.log"))
            await asyncio.to_thread(_remove, cleanup)
        finally:
            cur = self._tails.get(container_id)
            if cur is not None and cur[1] is asyncio.current_task():
                del self._tails[container_id]

    def streaming(self, container_id: str) -> bool:
        return container_id in self._tails

    async def settled(self, container_id: str) -> None:
        """Return once no lazy restore of ``container_id`` is streaming pages."""
        tail = self._tails.get(container_id)
        if tail is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(tail[1])

    async def drop(self, container_id: str) -> None:
        """The container is gone (destroy): stop serving it, and wait for the cleanup."""
        tail = self._tails.get(container_id)
        if tail is not None:
            await tail[0].kill()
            await self.settled(container_id)

    async def settle_all(self) -> None:
        for _, task in list(self._tails.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)


def _remove(paths: Sequence[Path]) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
