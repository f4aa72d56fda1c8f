"""The image catalog's core: what a name is (``describe``, ``entrypoint``), how a
sandbox of it is made (``source_for``), its warm pool, its removal.

``images.py`` adds the jobs that make images (build, pull, register, pre-boot); see
its docstring for the kinds of image and their one namespace of names.
"""

from __future__ import annotations

import builtins

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import (
    ImageInUse,
    ImageNotFound,
    ImageProtected,
    InvalidRequest,
    NotFound,
)
from ..images import refs
from ..images.build import Builder
from ..images.catalog import Catalog, ImageRecord
from ..images.pull import Puller
from ..images.tools import Tools
from ..storage.images import OciLayout
from .agent_client import AgentClient
from .assemble import Assembler
from .locks import LockRegistry
from .memstate import MemoryState
from .preboot import IMAGES_NAMESPACE, Preboot
from .records import SandboxRecord
from .sources import Plan, boot_plan, restore_plan
from .spec import DEFAULT_DISK_MB, MIN_FREE_DISK_MB, CreateSpec
from .store import Store
from .tasks import TaskSet
from .warm import WARM_NAMESPACE, WarmPool

log = logging.getLogger(__name__)
BUILD_NAMESPACE = "__build__"
JOB_STOP_WAIT = 60.0
MAX_WARM_POOL = 16
Progress = Callable[[str], None]


@dataclass
class ImageInfo:
    """One named image as the API shows it."""

    name: str
    kind: str  # oci | snapshot
    source: str  # build | pull | register | local
    digest: str | None = None
    snapshot_id: str | None = None
    prebooted: bool = False
    memory_snapshot_id: str | None = None
    warmup: list[str] | None = None
    size_bytes: int | None = None
    layers: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    created_at: int | None = None
    in_use: int = 0
    warm_pool: int = 0  # size asked for
    warm_ready: int = 0  # sandboxes ready now

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _nothing(_: str) -> None:
    pass


@dataclass(frozen=True)
class Hooks:
    """What the image manager asks of the lifecycle above it (it imports nothing of it):
    a create (a pre-boot's helper: no pool, no restore), a destroy, a warm pool."""

    create: Callable[..., Awaitable[SandboxRecord]]
    destroy: Callable[..., Awaitable[SandboxRecord]]
    open_pool: Callable[[str, int], WarmPool]


class ImageCatalog:
    """Named images as the lifecycle sees them: ``source_for`` says how a sandbox of a
    name is made; it never boots anything itself (``Hooks`` does, for its pools)."""

    def __init__(self, settings: Settings, records: Store, layout: OciLayout, memory: MemoryState,
                 assembler: Assembler, agent: AgentClient, hooks: Hooks) -> None:
        self.settings = settings
        self.records = records  # the sandbox records (SQLite)
        self.layout = layout  # the OCI layout + unpacked subvolumes
        self.memory = memory
        self.assembler = assembler
        self.hooks = hooks
        self.tools = Tools(settings)
        self.catalog = Catalog(records.db)
        self.builder = Builder(self.tools, self.layout)
        self.puller = Puller(self.tools, self.layout)
        self._locks = LockRegistry()
        self._jobs = TaskSet("image job")
        self.pools: dict[str, WarmPool] = {}
        self._configs: dict[str, dict[str, Any]] = {}  # image config by manifest digest
        self.preboots = Preboot(
            self.catalog, memory, agent, settings.agent_port, drop_snapshot=self._drop_snapshot,
            create=lambda spec: hooks.create(spec, warm=False, preboot=False),
            destroy=lambda sid, ns, reason: hooks.destroy(sid, ns, reason=reason),
        )

    @property
    def store(self) -> OciLayout:
        """The OCI layout (old name: "store" now means the records only)."""
        return self.layout

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run an image job in the background (an API build or pull outlives its
        request); :meth:`close` waits for it."""
        return self._jobs.spawn(coro)

    async def close(self, timeout: float = JOB_STOP_WAIT) -> None:
        """At server stop: let running jobs finish (bounded), then cancel them, which
        kills their buildah/skopeo process group (``_proc.stream``)."""
        await self._jobs.close(timeout)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.get(name)

    async def _preboot(self, rec: ImageRecord, warmup: list[str], on_line: Progress) -> None:
        await self.preboots.run(rec, warmup, on_line)

    # -- reading ------------------------------------------------------------------------

    def list(self) -> list[ImageInfo]:
        names = set(self.layout.refs()) | {r.name for r in self.catalog.list()}
        return [self.describe(n) for n in sorted(names)]

    def describe(self, name: str) -> ImageInfo:
        canon = refs.canonical(name, field="name")
        rec = self.catalog.get(canon)
        digest = self.layout.refs().get(canon)
        if rec is None and digest is None:
            raise ImageNotFound(name)
        rec = rec or ImageRecord(name=canon, kind="oci", source="local", digest=digest, created_at=0)
        info = ImageInfo(
            name=canon, kind=rec.kind, source=rec.source, digest=digest if rec.kind == "oci" else None,
            snapshot_id=rec.snapshot_id, prebooted=rec.memory_snapshot_id is not None,
            memory_snapshot_id=rec.memory_snapshot_id, warmup=rec.warmup, size_bytes=rec.size_bytes,
            created_at=rec.created_at or None, in_use=len(self.users(canon)), warm_pool=rec.warm_pool,
            warm_ready=self.pools[canon].ready if canon in self.pools else 0,
        )
        if rec.kind == "oci" and digest is not None:
            try:
                manifest = self.layout.manifest(digest)
                info.layers = [layer["digest"] for layer in manifest["layers"]]
                info.size_bytes = sum(layer["size"] for layer in manifest["layers"])
                info.config = self._config(digest)
            except FileNotFoundError:
                pass
        return info

    def _config(self, digest: str) -> dict[str, Any]:
        """The run-time part of an image's config; cached, as a digest never changes."""
        cached = self._configs.get(digest)
        if cached is None:
            cfg = self.layout.image_config(self.layout.manifest(digest)).get("config", {})
            cached = {k: cfg[k] for k in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User") if cfg.get(k)}
            self._configs[digest] = cached
        return cached

    def entrypoint(self, name: str) -> builtins.list[str] | None:
        """What a sandbox of this image starts after boot when its create names no
        ``entrypoint``: the image's ``ENTRYPOINT`` with ``CMD`` as its arguments. ``CMD``
        alone is not run: it is the interactive default (a shell), and the agent, not
        the image's command, is the sandbox's init.

        On every create's path, so it reads only the image's config (cached by digest),
        never ``describe`` (which counts the image's users over every live record: it
        made a burst of 100 creates spend 39 % of the server's CPU here)."""
        try:
            digest = self.layout.refs().get(refs.canonical(name, field="name"))
            config = self._config(digest) if digest is not None else {}
        except (InvalidRequest, FileNotFoundError):
            return None
        entry = config.get("Entrypoint")
        return [*entry, *(config.get("Cmd") or [])] if entry else None

    def users(self, name: str) -> builtins.list[str]:
        """IDs of live sandboxes started from the image (any namespace but ours)."""
        return [r.id for r in self.records.list(live_only=True)
                if r.image == name and r.namespace not in (IMAGES_NAMESPACE, BUILD_NAMESPACE, WARM_NAMESPACE)]

    async def _drop_snapshot(self, snapshot_id: str) -> None:
        try:
            await self.memory.delete_snapshot(snapshot_id)
        except NotFound:
            pass

    # -- warm pools --------------------------------------------------------------------------

    def start_pools(self) -> None:
        """At manager start: a pool for every image that asked for one."""
        for rec in self.catalog.list():
            if rec.warm_pool > 0 and rec.name not in self.pools:
                self._open_pool(rec.name, rec.warm_pool)

    def _open_pool(self, name: str, size: int) -> None:
        self.pools[name] = self.hooks.open_pool(name, size)

    async def _close_pool(self, name: str) -> None:
        pool = self.pools.pop(name, None)
        if pool is not None:
            await pool.close()

    async def close_pools(self) -> None:
        for name in list(self.pools):
            await self._close_pool(name)

    async def _refresh_pool(self, name: str) -> None:
        """After the image changed (rebuilt, re-pulled, pre-booted): its ready sandboxes
        are of the old one; replace them."""
        rec = self.catalog.get(name)
        await self._close_pool(name)
        if rec is not None and rec.warm_pool > 0:
            self._open_pool(name, rec.warm_pool)

    async def set_warm_pool(self, name: str, size: int) -> ImageInfo:
        """Keep ``size`` running sandboxes of the image ready (0: none). Creates that fit
        claim one (~the default image's warm path) instead of booting or restoring."""
        if not 0 <= size <= MAX_WARM_POOL:
            raise InvalidRequest(f"size must be between 0 and {MAX_WARM_POOL}, got {size}")
        canon = refs.canonical(name, field="name")
        if canon == refs.canonical(self.settings.default_image):
            raise ImageProtected(canon, pool=True)
        self.describe(canon)  # 404 if unknown
        async with self._lock(canon):
            rec = self.catalog.get(canon) or ImageRecord(name=canon, digest=self.layout.refs().get(canon))
            rec.warm_pool = size
            self.catalog.put(rec)
            await self._refresh_pool(canon)
        return self.describe(canon)

    # -- remove -----------------------------------------------------------------------------

    def _check_replaceable(self, name: str) -> None:
        """A build or pull may replace an image that sandboxes use (theirs are copies),
        but never the default image."""
        if name == refs.canonical(self.settings.default_image):
            raise ImageProtected(name)

    def _check_removable(self, name: str) -> None:
        self._check_replaceable(name)
        if users := self.users(name):
            raise ImageInUse(name, users)

    async def remove(self, name: str) -> None:
        canon = refs.canonical(name, field="name")
        async with self._lock(canon):
            self.describe(canon)  # 404 if unknown
            self._check_removable(canon)
            await self._close_pool(canon)
            rec = self.catalog.get(canon)
            if canon in self.layout.refs():
                await self.layout.remove(canon)
                await self.builder.forget(canon)
            if rec is not None:
                for sid in {rec.snapshot_id, rec.memory_snapshot_id} - {None}:
                    await self._drop_snapshot(sid)  # type: ignore[arg-type]
                self.catalog.delete(canon)

    async def prune(self) -> int:
        """Drop the build cache (buildah's untagged images) and any blob or unpacked
        subvolume no name uses; returns how many cached images went. Builds keep their
        cache until then, as ``docker builder prune`` does."""
        pruned = await self.builder.prune() if self.tools.buildah_root.exists() else 0
        await self.layout.collect()
        return pruned

    # -- create a sandbox from an image ---------------------------------------------------------

    async def create(self, spec: CreateSpec, *, preboot: bool = True, warm: bool = True) -> SandboxRecord:
        """A running sandbox from a named image (the lifecycle's create: claimed from
        the image's pool, else booted or restored; see ``source_for``)."""
        return await self.hooks.create(spec, preboot=preboot, warm=warm)

    def _restores(self, rec: ImageRecord) -> bool:
        """Whether a create from this pre-booted image restores its memory snapshot.

        Measured (bench/images.py, docs/ARCHITECTURE.md): booting a sandbox (~90 ms to
        a ready agent) beats restoring one (~170-210 ms: CRIU reads and maps the dump),
        so a restore is used when the memory holds something a boot would not recreate:
        the warm-up command's work, or the processes of a registered memory snapshot.
        """
        mode = self.settings.preboot_restore
        if mode == "always":
            return True
        if mode == "never":
            return False
        return bool(rec.warmup) or bool(rec.extra.get("memory_state"))

    async def source_for(self, name: str, spec: CreateSpec, *, preboot: bool = True,
                         agentfs: Path) -> Plan:
        """How a sandbox of image ``name`` (canonical, local) is made: a restore of its
        memory snapshot (pre-booted, when that pays: ``_restores``), a boot of a
        registered filesystem snapshot, or a boot of the OCI image."""
        rec = self.catalog.get(name) or ImageRecord(name=name, digest=self.layout.refs().get(name))
        if preboot and rec.memory_snapshot_id and self._restores(rec):
            return self._restore_plan(rec, spec, rec.memory_snapshot_id, memory=True)
        if rec.kind == "snapshot":
            assert rec.snapshot_id
            return self._restore_plan(rec, spec, rec.snapshot_id, memory=False)
        plan = boot_plan(await self.layout.resolve(name), spec, agentfs)
        plan.extra["from_image"] = {"name": rec.name, "restored": False, "digest": rec.digest}
        return plan

    def _restore_plan(self, image: ImageRecord, spec: CreateSpec, snapshot_id: str, *, memory: bool) -> Plan:
        """An image's snapshot with the request's resources (all of them: the image's
        snapshot carries none of the client's)."""
        snap = self.memory.get_snapshot(snapshot_id)
        image_mb = int(snap.source.get("image_mb", 0))
        resources = {"cpus": spec.cpus, "memory_mb": spec.memory_mb, "pids_limit": spec.pids_limit,
                     "disk_mb": spec.disk_mb or max(DEFAULT_DISK_MB, image_mb + MIN_FREE_DISK_MB)}
        plan = restore_plan(self.memory.snapshot_dir(snap.id), snap.source, resources, memory=memory,
                            image=image.name, network=spec.network)
        plan.extra["from_image"] = {"name": image.name, "restored": memory, "snapshot_id": snapshot_id}
        return plan


