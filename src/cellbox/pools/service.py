"""Sandbox pools: a project's named warm pool of one image, resources and network policy.

Each pool is backed by a ``manager.warm.WarmPool`` of its image (the same class that
serves the default image's pool), used only through its public interface (``fill``,
``can_serve``, ``claim`` via ``manager.claim_warm``, ``ready``, ``close``), so its
self-sizing (the speed issue) applies to pools as it lands. A claim is a create
through ``SandboxService.create`` with the pool's spec and a ``creator`` that takes a
warm sandbox first: the project's quotas, its secrets and the pool's entrypoint apply
as on any create, and an empty pool still answers, with a cold create.

Definitions live in the database (``pools/store.py``); each server process keeps its
own warm sandboxes, built when it starts (or first touches a pool) and destroyed when
it stops or the pool is deleted or replaced. Another project's pool is a 404.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from functools import partial
from typing import Any

from .. import ids
from ..errors import Conflict, InvalidRequest, NotFound, QuotaExceeded
from ..manager.resize import MIN_MEMORY_MB, host_memory_mb
from ..manager.records import SandboxRecord, now_ms
from ..manager.lifecycle import SandboxManager
from ..manager.spec import CreateSpec
from ..manager.service import CreateOptions, SandboxService
from ..manager.warm import WarmPool
from ..images.names import builtin_alias
from ..network import policy as egress_policy
from ..storage.images import normalize
from .store import PoolRecord, PoolStore

log = logging.getLogger(__name__)
# A warm sandbox holds memory whether it is claimed or not: a tenant must not fill the
# host with them. Per pool, and pools per project (CELLBOX_POOL_MAX_WARM to change).
MAX_WARM = int(os.environ.get("CELLBOX_POOL_MAX_WARM", "4"))
MAX_POOLS_PER_PROJECT = 16
EXECUTOR = "local"  # Tensorlake's containers name the host that runs them: there is one


class PoolService:
    def __init__(self, service: SandboxService) -> None:
        self.svc = service
        self._store: PoolStore | None = None  # made on first use: an app may be built without a manager
        self._warm: dict[str, WarmPool] = {}
        # Claims of each pool still being made: counted against max_containers with the
        # live ones, so a burst of concurrent claims cannot pass it (in this process;
        # the count of live records covers the others, once their records exist).
        self._inflight: dict[str, int] = {}
        self._closed = False
        self._starting: asyncio.Future[None] | None = None

    @property
    def m(self) -> "SandboxManager":
        return self.svc.manager

    @property
    def store(self) -> PoolStore:
        if self._store is None:
            self._store = PoolStore(self.m.store.db)
        return self._store

    # -- runtime -----------------------------------------------------------------------

    async def start(self) -> None:
        """Warm every pool (another process may have made them) in the background: a
        pool of a registry image may pull it first, and the server must not wait."""
        self._starting = asyncio.ensure_future(self._warm_all())

    async def _warm_all(self) -> None:
        for rec in self.store.list():
            try:
                await self._runtime(rec)
            except Exception as exc:  # noqa: BLE001 - one broken pool must not stop the others
                log.warning("pool %s: cannot warm it: %s", rec.id, exc)

    async def close(self) -> None:
        self._closed = True
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        for warm in list(self._warm.values()):
            await warm.close()
        self._warm.clear()

    async def _image(self, image: str) -> str | None:
        """The catalog's name of ``image`` (None: the default image), pulling a registry
        reference the first time; 404 for an image that does not exist."""
        default = self.m.settings.default_image
        alias, image = builtin_alias(image)  # tensorlake/ubuntu-minimal: the built-in image
        if alias or image is None or image in (default, normalize(default)):
            return None
        return await self.m.image_manager.ensure_local(image)

    async def _runtime(self, rec: PoolRecord) -> WarmPool | None:
        if self._closed or rec.warm_containers <= 0:
            return None
        warm = self._warm.get(rec.id)
        if warm is None:
            # The manager's own constructor of warm pools (it fills it): the same class,
            # builder and teardown as the default image's pool.
            warm = self._warm[rec.id] = self.m.open_pool(await self._image(rec.image), rec.warm_containers)
        return warm

    async def _drop_runtime(self, pool_id: str) -> None:
        if (warm := self._warm.pop(pool_id, None)) is not None:
            await warm.close()

    # -- definitions ---------------------------------------------------------------------

    def get(self, pool_id: str, namespace: str) -> PoolRecord:
        rec = self.store.get(pool_id)
        if rec is None or rec.namespace != namespace:
            raise NotFound(f"sandbox pool {pool_id!r} not found", code="POOL_NOT_FOUND")
        return rec

    def list(self, namespace: str) -> list[PoolRecord]:
        return self.store.list(namespace)

    async def create(self, rec: PoolRecord) -> PoolRecord:
        if len(self.store.list(rec.namespace)) >= MAX_POOLS_PER_PROJECT:
            raise Conflict(f"project {rec.namespace!r} has {MAX_POOLS_PER_PROJECT} pools, the most it may have",
                           code="POOL_LIMIT")
        self._check(rec)
        await self._image(rec.image)  # an unknown image is a 404 before anything is stored
        self.store.put(rec)
        await self._runtime(rec)
        return rec

    async def update(self, pool_id: str, namespace: str, changes: dict[str, Any]) -> PoolRecord:
        """Replace a pool's definition (PUT); its warm sandboxes are rebuilt."""
        old = self.get(pool_id, namespace)
        rec = replace(old, **changes, updated_at=now_ms())
        self._check(rec)
        await self._image(rec.image)
        if rec.max_containers is not None and self._claimed(rec) > rec.max_containers:
            raise Conflict(f"pool {pool_id}: {self._claimed(rec)} sandboxes in use, more than "
                           f"max_containers={rec.max_containers}", code="POOL_IN_USE")
        self.store.put(rec)
        await self._drop_runtime(pool_id)
        await self._runtime(rec)
        return rec

    async def delete(self, pool_id: str, namespace: str) -> None:
        rec = self.get(pool_id, namespace)
        if in_use := self._claimed(rec):
            raise Conflict(f"pool {pool_id} has {in_use} sandbox(es) in use; terminate them first",
                           code="POOL_IN_USE")
        self.store.delete(pool_id)
        await self._drop_runtime(pool_id)

    def _check_quota(self, rec: PoolRecord) -> None:
        """Warm sandboxes hold memory and CPU before anyone claims them: a project's
        pools may keep at most what its quotas allow running (403 otherwise), or a
        tenant capped at 3 sandboxes could keep 64 booted in pools."""
        door = self.svc.door
        if door is None or not (limits := door.store.get_quota(rec.namespace)):
            return
        pools = [p for p in self.store.list(rec.namespace) if p.id != rec.id] + [rec]
        held = {"running_sandboxes": sum(p.warm_containers for p in pools),
                "memory_mb": sum(p.warm_containers * p.memory_mb for p in pools),
                "vcpus": sum(p.warm_containers * p.cpus for p in pools)}
        for name, use in held.items():
            value = limits.get(name)
            if value is not None and use > value:
                raise QuotaExceeded(f"project {rec.namespace!r}: its pools' warm sandboxes would hold {name} "
                                    f"{use:g}, over its quota of {value:g}")

    def _check(self, rec: PoolRecord) -> None:
        self._check_quota(rec)
        if not 0 <= rec.warm_containers <= MAX_WARM:
            raise InvalidRequest(f"warm_containers: must be between 0 and {MAX_WARM} on this server, "
                                 f"got {rec.warm_containers}")
        if rec.max_containers is not None and rec.max_containers < rec.warm_containers:
            raise InvalidRequest("max_containers: must be at least warm_containers")
        host_cpus = os.cpu_count() or 1
        if not 0.01 <= rec.cpus <= host_cpus:
            raise InvalidRequest(f"resources.cpus: must be between 0.01 and {host_cpus}, got {rec.cpus}")
        host_mb = host_memory_mb()
        if not MIN_MEMORY_MB <= rec.memory_mb <= host_mb:
            raise InvalidRequest(f"resources.memory_mb: must be between {MIN_MEMORY_MB} and {host_mb}, "
                                 f"got {rec.memory_mb}")

    # -- claims --------------------------------------------------------------------------

    def _claimed(self, rec: PoolRecord) -> int:
        return len(self.claimed(rec))

    def claimed(self, rec: PoolRecord) -> list[SandboxRecord]:
        """The pool's live sandboxes (claimed and not terminated)."""
        return [s for s in self.svc.store.list(rec.namespace, live_only=True) if s.extra.get("pool_id") == rec.id]

    def idle(self, pool_id: str) -> int:
        warm = self._warm.get(pool_id)
        return warm.ready if warm is not None else 0

    async def claim(self, pool_id: str, namespace: str, budget: float | None) -> SandboxRecord:
        rec = self.get(pool_id, namespace)
        inflight = self._inflight.get(pool_id, 0)
        if rec.max_containers is not None and self._claimed(rec) + inflight >= rec.max_containers:
            raise Conflict(f"pool {pool_id} is at capacity (max_containers={rec.max_containers})",
                           code="POOL_AT_CAPACITY")
        self._inflight[pool_id] = inflight + 1
        try:
            return await self._claim(rec, namespace, budget)
        finally:
            self._inflight[pool_id] -= 1

    async def _claim(self, rec: PoolRecord, namespace: str, budget: float | None) -> SandboxRecord:
        network = None
        if rec.network is not None:
            pol = egress_policy.parse(rec.network.get("allow_internet_access", True),
                                      rec.network.get("allow_out", []), rec.network.get("deny_out", []))
            network = None if pol.unrestricted else pol
        image = await self._image(rec.image)
        spec = CreateSpec(image=image, cpus=rec.cpus, memory_mb=rec.memory_mb, disk_mb=rec.disk_mb,
                          namespace=namespace, timeout_secs=rec.timeout_secs or None, network=network)
        opts = CreateOptions(spec=spec, entrypoint=tuple(rec.entrypoint) if rec.entrypoint else None,
                             creator=partial(self._make, rec))
        return await self.svc.create(opts, wait=True, budget=budget)

    async def _make(self, pool: PoolRecord, spec: CreateSpec) -> SandboxRecord:
        """A sandbox for a claim: a warm one of the pool if it has one, else a cold create."""
        warm = await self._runtime(pool)
        made = None
        if warm is not None and warm.can_serve(spec):
            resolved = await self.m.egress.resolve(spec.network)
            made = await self.m.claim_warm(warm, spec, warm.image_mb, resolved)
        if made is None:
            made = await self.m.create(spec)
        made.extra["pool_id"] = pool.id  # stored by the caller with the create's settings
        return made


def new_pool_id() -> str:
    return ids.new_id()
