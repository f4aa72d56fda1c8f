"""Sandbox lifecycle: create, destroy, refresh; one path for every source.

Create is always the same three steps: **resolve the source** (the default image, a
named image of any kind, a snapshot: ``images.source_for`` / ``sources.restore_plan``),
**claim** a ready sandbox from that source's warm pool if it has one that fits, **else
assemble** one (``assemble.py``: the parts table, undo on failure). The default image
is just an image whose pool size is ``CELLBOX_WARM_POOL``.

This is the node's manager (usable without ``api/`` or the proxy: the cluster issue
runs it as its own process); ``service.py`` adds the server's policies on top.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from .. import faults, ids
from ..config import Settings
from ..errors import NameTaken, SandboxNotRunning
from ..network import dns
from ..network.egress import EgressControl, Resolved
from ..network.node import NodeNetwork
from ..runtime import agentfs, cgroups, checkpoint, criu_cache
from ..runtime.node import NodeRuntime
from ..runtime.runc import Runc
from ..storage import images as images_mod
from ..storage import pool as pool_mod
from ..storage.node import NodeStorage
from . import limits, spec as spec_mod, warm_sizing
from .agent_client import AgentClient
from .assemble import Assembler, no_space
from .cold_gate import ColdGate
from .image_catalog import MAX_WARM_POOL
from .images import Hooks, ImageManager
from .memstate import MemoryState
from .records import SandboxRecord, Status, now_ms
from .sources import Plan, boot_plan, restore_plan
from .spec import DEFAULT_DISK_MB, MIN_FREE_DISK_MB, MIN_MEMORY_MB, CreateSpec
from .store import Store
from .volumes import VolumeManager
from .warm import WarmPool

__all__ = ["DEFAULT_DISK_MB", "MIN_FREE_DISK_MB", "MIN_MEMORY_MB", "CreateSpec", "SandboxManager", "no_space"]
log = logging.getLogger(__name__)


class SandboxManager:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store  # the records (SQLite); the OCI layout is ``self.images``
        self.images = images_mod.OciLayout(settings)
        self.runc = Runc(settings.runc, settings.runc_root)
        self._agentfs: Path | None = None
        self._dns: dns.DnsForwarder | None = None
        self.egress = EgressControl(settings.nft_table, settings.run_dir, str(settings.gateway),
                                    lambda: self.dns_upstreams)
        self.agent = AgentClient()  # every host -> agent call goes through it (agent_client.py)
        self.assembler = Assembler(settings, store, NodeRuntime(self.runc, settings.bin_dir),
                                   NodeStorage(settings.pool), NodeNetwork(settings, self.egress), self.agent)
        self.warm: WarmPool | None = None
        self.cold_gate = ColdGate()  # speed (issue 15): cold creates a few at a time, the rest queued
        self.memory = MemoryState(self.assembler, self.runc, self.egress)
        self.volumes = VolumeManager(self)  # volumes hook: manager/volumes.py
        self.memory.volumes = self.volumes
        self.assembler.volumes = self.volumes
        self.image_manager = ImageManager(
            settings, store, self.images, self.memory, self.assembler, self.agent,
            Hooks(create=self.create, destroy=self.destroy, open_pool=self.open_pool),
        )

    # -- service start/stop -----------------------------------------------------------

    async def start(self) -> None:
        """Make the host-wide parts (bridge, nft table, resolver) and the warm pools."""
        from ..network import host

        await host.ensure(self.settings)
        upstreams = self.settings.dns_upstream.split(",") if self.settings.dns_upstream else dns.host_upstreams()
        self._dns = dns.DnsForwarder(str(self.settings.gateway), upstreams,
                                     override_file=self.settings.data_dir / "dns-upstreams",
                                     egress=self.egress,
                                     max_tcp_per_client=self.settings.dns_tcp_per_sandbox)
        await self._dns.start()
        self._agentfs_tree()
        checkpoint.write_criu_config(self.settings.data_dir / "criu.conf")
        criu_cache.ensure()  # speed (issue 15): CRIU probes the kernel once per boot
        if self.settings.userns:
            await self.assembler.runtime.prepare()  # the network hook built now, not in the first create
        await self.volumes.sweep()  # volumes hook: host-side mounts of ended sandboxes
        if self.settings.warm_pool_size > 0:
            self.warm = self.open_pool(None, self.settings.warm_pool_size)
        self.image_manager.start_pools()

    def open_pool(self, image: str | None, size: int) -> WarmPool:
        """A warm pool of ``image`` (None: the default image), filling."""
        # speed (issue 15): sized from demand, from ``size`` up; a named image's pool is
        # capped at MAX_WARM_POOL (the memory budget is per pool)
        cap = 0 if image is None else MAX_WARM_POOL
        pool = WarmPool(size, image=image, build=self._build_warm, destroy=self._destroy_warm,
                        rootfs=self.assembler.storage.rootfs_path, sizer=warm_sizing.sizer_for(size, cap),
                        cold_busy=self.cold_gate.busy)
        pool.fill()
        return pool

    async def _build_warm(self, spec: CreateSpec) -> SandboxRecord:
        return await self.create_from(spec)

    async def _destroy_warm(self, rec: SandboxRecord, reason: str) -> None:
        await self.destroy(rec.id, rec.namespace, reason=reason)

    @property
    def dns_upstreams(self) -> list[str]:
        return list(self._dns.upstreams) if self._dns else []

    @dns_upstreams.setter
    def dns_upstreams(self, servers: list[str] | None) -> None:
        """Change where the sandboxes' resolver forwards to, for every cellbox process on
        this host (tests point it at their own DNS server); None restores the defaults."""
        if self._dns is not None:
            self._dns.set_override(servers)

    async def stop(self) -> None:
        await self.image_manager.close()
        await self.image_manager.close_pools()
        await self.memory.settle()
        if self.warm is not None:
            await self.warm.close()
            self.warm = None
        if self._dns is not None:
            await self._dns.stop()
        await self.agent.close()

    # -- lookups ----------------------------------------------------------------------

    def get(self, ref: str, namespace: str = "default") -> SandboxRecord:
        """Find a sandbox by ID or by name; 404 if neither matches."""
        return self.memory.get(ref, namespace)

    def agent_address(self, rec: SandboxRecord) -> tuple[str, int]:
        if rec.status != Status.RUNNING or not rec.ip:
            raise SandboxNotRunning(rec.id, rec.status.value, suffix=", not running")
        return rec.ip, self.settings.agent_port

    # -- create -------------------------------------------------------------------------

    def _validate(self, spec: CreateSpec) -> None:
        spec_mod.validate(spec)

    def _agentfs_tree(self) -> Path:
        if self._agentfs is None:
            self._agentfs = agentfs.ensure(self.settings.agentfs)
        return self._agentfs

    async def _allocate(self, rec: SandboxRecord) -> None:
        await self.assembler.allocate(rec)

    def _is_default_image(self, image: str | None) -> bool:
        default = self.settings.default_image
        return image in (None, default, images_mod.normalize(default))

    def _pool(self, image: str | None) -> WarmPool | None:
        return self.warm if image is None else self.image_manager.pools.get(image)

    async def create(self, spec: CreateSpec, *, warm: bool = True, preboot: bool = True) -> SandboxRecord:
        """A running sandbox: resolve the source, claim from its warm pool, else assemble.

        ``warm=False`` skips the pool (a pool's own builds); ``preboot=False`` boots
        even a pre-booted image (its pre-boot)."""
        spec_mod.validate(spec)
        image = None if spec.image is None or self._is_default_image(spec.image) else (
            await self.image_manager.ensure_local(spec.image))
        spec = replace(spec, image=image)
        resolved = await self.egress.resolve(spec.network)
        pool = self._pool(image) if warm else None
        if pool is not None and pool.can_serve(spec):
            rec = await self.claim_warm(pool, spec, pool.image_mb, resolved)
            if rec is not None:
                return rec
        if pool is None or not pool.fits(spec):
            pool = None
        # speed (issue 15): a cold create waits its turn at the gate (429/503 before
        # anything is made when the host is too far behind), and takes a warm sandbox
        # instead if its pool has one ready first.
        ticket = self.cold_gate.enter()
        try:
            while not await ticket.wait(pool.has_ready if pool is not None else None):
                assert pool is not None
                rec = await self.claim_warm(pool, spec, pool.image_mb, resolved)
                if rec is not None:
                    return rec
            started = time.monotonic()
            rec = await self.create_from(spec, preboot=preboot, resolved=resolved)
            ticket.done(time.monotonic() - started)
            return rec
        finally:
            ticket.close()

    async def plan(self, spec: CreateSpec, *, preboot: bool = True) -> Plan:
        """How a sandbox of ``spec.image`` (None: the default image) is made."""
        if spec.image is None:
            image = await self.images.resolve(self.settings.default_image)
            return boot_plan(image, spec, self._agentfs_tree())
        return await self.image_manager.source_for(spec.image, spec, preboot=preboot, agentfs=self._agentfs_tree())

    async def create_from(self, spec: CreateSpec, *, preboot: bool = True,
                          resolved: Resolved | None = None) -> SandboxRecord:
        """Assemble a sandbox from its source (no warm pool)."""
        pool_mod.check_pool(self.settings)
        plan = await self.plan(spec, preboot=preboot)
        return await self.assembler.create(plan, namespace=spec.namespace, name=spec.name,
                                           timeout_secs=spec.timeout_secs, sandbox_id=spec.sandbox_id,
                                           cpu_shares=spec.cpu_shares, resolved=resolved)

    async def create_cold(self, spec: CreateSpec, resolved: Resolved | None = None) -> SandboxRecord:
        """Build a sandbox of the default image (or ``spec.image``) from scratch."""
        spec_mod.validate(spec)
        if self._is_default_image(spec.image):
            spec = replace(spec, image=None)
        return await self.create_from(spec, resolved=resolved)

    async def create_from_snapshot(self, snapshot_id: str, spec: CreateSpec) -> SandboxRecord:
        """A sandbox restored from a snapshot (its memory too, for a memory snapshot).

        The request's resources that the client named (``spec.explicit``) are applied;
        the others are the snapshot's. ``spec.network`` replaces its egress policy."""
        spec_mod.validate(spec)
        snap, snap_dir, memory = self.memory.ready_snapshot(snapshot_id)
        resources = spec_mod.for_snapshot(spec, snap.source["resources"])
        plan = restore_plan(snap_dir, snap.source, resources, memory=memory, network=spec.network)
        return await self.assembler.create(plan, namespace=spec.namespace, name=spec.name,
                                           timeout_secs=spec.timeout_secs, sandbox_id=spec.sandbox_id)

    async def claim_warm(self, pool: WarmPool, spec: CreateSpec, image_mb: int,
                         resolved: Resolved | None) -> SandboxRecord | None:
        """A sandbox from ``pool`` shaped to ``spec`` (limits, name, egress), or None."""
        disk_mb = spec_mod.disk_mb(spec, image_mb)
        if spec.name and self.store.get_by_name(spec.namespace, spec.name):
            raise NameTaken(spec.name)
        rec = await pool.claim(spec, disk_mb, self._apply_warm_limits, self._discard_warm)
        if rec is None:
            return None
        try:
            if spec.network is not None:
                # Before the record is handed out: no user code has run yet.
                assert rec.ip
                await self.egress.apply(rec.id, rec.ip, spec.network, resolved)
                rec.extra["network_policy"] = spec.network.to_wire()
            self.store.update(rec)
        except sqlite3.IntegrityError:
            await self.destroy(rec.id, rec.namespace, reason="name_taken")
            raise NameTaken(spec.name or "") from None
        except BaseException:
            await self.destroy(rec.id, rec.namespace, reason="startup_failed")
            raise
        return rec

    def _apply_warm_limits(self, rec: SandboxRecord, spec: CreateSpec, disk_mb: int) -> None:
        limits.apply(self.assembler.state_dir(rec.id), self.assembler.storage.rootfs_path(rec.id), rec.id,
                     cpus=spec.cpus, memory_mb=spec.memory_mb, pids_limit=spec.pids_limit,
                     writable_mb=disk_mb - int(rec.extra.get("image_mb", 0)))

    async def _discard_warm(self, rec: SandboxRecord) -> None:
        """A warm sandbox found dead at claim: its parts removed, its record failed."""
        await self.teardown(rec.id)
        rec.status = Status.FAILED
        self.store.update(rec)

    # -- destroy ------------------------------------------------------------------------

    async def destroy(self, ref: str, namespace: str = "default", *, reason: str = "terminated") -> SandboxRecord:
        rec = self.get(ref, namespace)
        if rec.status.is_final:
            return rec
        oom = cgroups.oom_kills(ids.cgroup_path(rec.id))
        faults.hit("destroy.before_teardown")
        await self.teardown(rec.id)
        faults.hit("destroy.after_teardown")
        rec.status = Status.TERMINATED
        rec.terminated_at = now_ms()
        rec.termination_reason = reason
        if oom:
            rec.extra["oom_kills"] = oom
        self.store.update(rec)
        return rec

    async def teardown(self, sandbox_id: str) -> None:
        """Remove every part a sandbox may own, derived from its ID; idempotent."""
        await self.assembler.teardown(sandbox_id)

    async def refresh(self, rec: SandboxRecord) -> SandboxRecord:
        """Reconcile a running record with the kernel: a dead init means a dead sandbox."""
        if rec.status != Status.RUNNING:
            return rec
        state = await self.runc.state(ids.container(rec.id))
        if state is None or state.status == "stopped":
            oom = cgroups.oom_kills(ids.cgroup_path(rec.id))
            await self.teardown(rec.id)
            rec.status = Status.FAILED
            rec.terminated_at = now_ms()
            rec.termination_reason = "oom_killed" if oom else "exited"
            rec.error = "the sandbox's init was OOM-killed" if oom else "the sandbox's init exited"
            self.store.update(rec)
        return rec

