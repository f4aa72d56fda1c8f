"""Where a sandbox comes from: the only things that differ between a boot and a restore.

``assemble.py`` makes the same parts for every sandbox; a source answers the four
questions that differ: where the rootfs comes from (an image's unpacked subvolume, or
a snapshot's files), whether the container gets a user namespace, how the bundle is
made (from scratch, or the snapshot's own config under a new identity), and how the
container starts (``runc run``, or a CRIU restore of the snapshot's memory).
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .. import faults, ids
from ..config import Settings
from ..errors import InvalidRequest
from ..network import policy as policy_mod
from ..network.policy import EgressPolicy
from ..runtime import bundle, criu_images, lazy_restore, userns
from ..storage.images import Image, ImageConfig
from . import agent_client
from . import spec as spec_mod
from .ports import Runtime, Storage
from .records import SandboxRecord
from .spec import CreateSpec

# Gives a restored agent a key of its own (``Assembler.rotate_key``).
RotateKey = Callable[[SandboxRecord, bytes | None], Awaitable[None]]


class Source(Protocol):
    """What ``assemble`` asks of a sandbox's origin (see the module docstring)."""

    @property
    def image(self) -> str: ...

    @property
    def image_mb(self) -> int: ...

    def use_userns(self, settings: Settings) -> bool: ...

    async def make_rootfs(self, storage: Storage, rec: SandboxRecord) -> Path: ...

    def bundle_config(self, rec: SandboxRecord, identity: dict[str, Any], settings: Settings,
                      cpu_shares: int | None) -> dict[str, Any]: ...

    async def start(self, runtime: Runtime, rec: SandboxRecord, state_dir: Path,
                    identity: dict[str, Any]) -> int: ...

    def agent_key(self, cfg: dict[str, Any]) -> bytes | None: ...

    async def after_ready(self, rotate: RotateKey, rec: SandboxRecord, key: bytes | None) -> None: ...


@dataclass
class BootSource:
    """An OCI image: a writable snapshot of its unpacked subvolume, a fresh bundle, ``runc run``."""

    image: str
    image_mb: int
    rootfs: Path
    config: ImageConfig | None
    agentfs_tree: Path

    def use_userns(self, settings: Settings) -> bool:
        return settings.userns

    async def make_rootfs(self, storage: Storage, rec: SandboxRecord) -> Path:
        faults.hit("create.rootfs")  # CELLBOX_FAULT_POINT=create.rootfs:enospc: a full pool
        return await storage.create_rootfs(rec.id, self.rootfs, rec.disk_mb - self.image_mb)

    def bundle_config(self, rec: SandboxRecord, identity: dict[str, Any], settings: Settings,
                      cpu_shares: int | None) -> dict[str, Any]:
        key = agent_client.new_key()  # this agent's own secret (agent/auth.py)
        rec.extra[agent_client.KEY_FIELD] = key
        cfg = self.config
        return bundle.config(
            agent_secret=key, hostname=rec.id, agentfs_tree=self.agentfs_tree, **identity,
            cgroups_path=ids.cgroup_path(rec.id),
            limits=bundle.Limits(rec.cpus, rec.memory_mb, rec.pids_limit, cpu_shares),
            agent_port=settings.agent_port, criu_config=settings.data_dir / "criu.conf",
            image_env=cfg.env if cfg else None, workdir=cfg.working_dir if cfg else "/",
            user=cfg.user if cfg else "",
        )

    async def start(self, runtime: Runtime, rec: SandboxRecord, state_dir: Path, identity: dict[str, Any]) -> int:
        return await runtime.run(ids.container(rec.id), state_dir)

    def agent_key(self, cfg: dict[str, Any]) -> bytes | None:
        raw = agent_client.env_key(cfg)
        return bytes.fromhex(raw) if raw else None

    async def after_ready(self, rotate: RotateKey, rec: SandboxRecord, key: bytes | None) -> None:
        pass


@dataclass
class RestoreSource:
    """A snapshot (or a clone's capture): a writable snapshot of its rootfs, its bundle
    under the new identity, and with ``memory`` a CRIU restore of its processes.

    ``manifest`` is the snapshot's (``memstate._manifest``), possibly with the request's
    resources patched in (``images.py``); ``mem_dir`` the memory images (default
    ``snap_dir/mem``; a clone keeps them on tmpfs)."""

    snap_dir: Path
    manifest: dict[str, Any]
    memory: bool
    mem_dir: Path | None = None

    @property
    def image(self) -> str:
        return str(self.manifest["image"])

    @property
    def image_mb(self) -> int:
        return int(self.manifest.get("image_mb", 0))

    def use_userns(self, settings: Settings) -> bool:
        # A memory image comes back with the namespaces it was dumped with: one from
        # before user namespaces (none in its bundle) restores without.
        return bundle.has_userns(self.manifest["bundle_config"]) if self.memory else settings.userns

    async def make_rootfs(self, storage: Storage, rec: SandboxRecord) -> Path:
        return await storage.create_rootfs(rec.id, self.snap_dir / "rootfs", max(16, rec.disk_mb - self.image_mb))

    def bundle_config(self, rec: SandboxRecord, identity: dict[str, Any], settings: Settings,
                      cpu_shares: int | None) -> dict[str, Any]:
        # A new address, so a new id range: the files on disk keep ids 0..65535 and
        # only the idmapped mount (and the bundle's mapping) changes.
        cfg = copy.deepcopy(self.manifest["bundle_config"])
        if not self.memory:  # a booted agent gets a fresh secret of its own
            agent_client.set_env_key(cfg, agent_client.new_key())
            rec.extra[agent_client.KEY_FIELD] = agent_client.env_key(cfg)
        bundle.set_identity(cfg, **identity)
        cfg["hostname"] = rec.id
        cfg["linux"]["cgroupsPath"] = ids.cgroup_path(rec.id)
        out: dict[str, Any] = cfg
        return out

    async def start(self, runtime: Runtime, rec: SandboxRecord, state_dir: Path, identity: dict[str, Any]) -> int:
        if not self.memory:
            return await runtime.run(ids.container(rec.id), state_dir)
        mem_dir = self.mem_dir or self.snap_dir / "mem"
        lazy = lazy_restore.enabled()
        # The restore reads a directory of its own (hard links): with a user namespace
        # its mapping is rewritten (criu_images.retarget); a lazy restore reads it after
        # returning, when the shared images may be gone (a clone's capture).
        if identity["userns_base"] is not None:  # CRIU restores the dump's mapping: give it ours
            images = await asyncio.to_thread(criu_images.retarget, mem_dir, identity["userns_base"],
                                             userns.SIZE, rec.id)
        elif lazy:
            images = await asyncio.to_thread(criu_images.link_copy, mem_dir, rec.id)
        else:
            images = mem_dir
        work = state_dir / "restore"
        cleanup = [work] if images == mem_dir else [images, work]
        pid = await runtime.restore(ids.container(rec.id), state_dir, images, work, lazy=lazy, cleanup=cleanup)
        faults.hit("clone.after_restore")
        await runtime.set_hostname(pid, rec.id)  # the UTS namespace came back with the source's
        return pid

    def agent_key(self, cfg: dict[str, Any]) -> bytes | None:
        # A restored agent still holds the source's secret (the one in the manifest's
        # environment): the new sandbox proves it and then rotates it.
        raw = agent_client.env_key(self.manifest["bundle_config"] if self.memory else cfg)
        return bytes.fromhex(raw) if raw else None

    async def after_ready(self, rotate: RotateKey, rec: SandboxRecord, key: bytes | None) -> None:
        if self.memory:
            await rotate(rec, key)


@dataclass
class Plan:
    """A sandbox about to be assembled: its source and the record fields it implies.

    ``live_limits``: a memory restore comes back with the limits it was dumped with;
    the plan's resources are applied to the running container afterwards (cgroup
    files, bundle, quota: ``limits.apply``)."""

    source: Source
    image: str
    resources: dict[str, Any]
    extra: dict[str, Any]
    policy: EgressPolicy | None = None
    live_limits: bool = False


def boot_plan(image: Image, spec: CreateSpec, agentfs_tree: Path) -> Plan:
    """Boot ``image`` with the request's resources."""
    image_mb = image.size_bytes >> 20
    resources = {"cpus": spec.cpus, "memory_mb": spec.memory_mb, "disk_mb": spec_mod.disk_mb(spec, image_mb),
                 "pids_limit": spec.pids_limit}
    return Plan(BootSource(image.name, image_mb, image.rootfs, image.config, agentfs_tree), image.name, resources,
                {"image_mb": image_mb}, spec.network)


def restore_plan(snap_dir: Path, manifest: dict[str, Any], resources: dict[str, Any], *, memory: bool,
                 image: str | None = None, network: EgressPolicy | None = None) -> Plan:
    """Restore a snapshot (``manifest``, its files in ``snap_dir``) with ``resources``.

    A filesystem snapshot boots: its bundle is patched to the resources. A memory one
    restores as dumped, then gets them live. ``network`` replaces the snapshot's egress
    policy (None keeps it); ``image`` renames the record's image (a named image)."""
    manifest = dict(manifest, image=image or manifest["image"])
    image_mb = int(manifest.get("image_mb", 0))
    if resources["disk_mb"] < image_mb + spec_mod.MIN_FREE_DISK_MB:
        raise InvalidRequest(f"disk_mb={resources['disk_mb']} is too small for the image ({image_mb} MiB)")
    own = manifest["resources"]
    changed = any(resources[k] != own[k] for k in ("cpus", "memory_mb", "pids_limit"))
    live = memory and changed
    if not memory and changed:  # else the snapshot's bundle is left exactly as it was
        manifest["bundle_config"] = with_limits(manifest["bundle_config"], resources)
    manifest["resources"] = resources if not memory else dict(own, disk_mb=resources["disk_mb"])
    policy = network if network is not None else policy_mod.from_wire(manifest.get("network_policy"))
    return Plan(RestoreSource(snap_dir, manifest, memory), manifest["image"], resources,
                {"image_mb": image_mb, "restored_from": manifest["sandbox_id"]}, policy, live)


def with_limits(cfg: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    """A copy of a bundle config with ``res``'s memory, CPU and pids limits."""
    cfg = copy.deepcopy(cfg)
    r = cfg["linux"]["resources"]
    r["memory"] = {"limit": res["memory_mb"] << 20, "swap": res["memory_mb"] << 20}
    r["cpu"] = {"quota": max(1000, int(res["cpus"] * bundle.CFS_PERIOD)), "period": bundle.CFS_PERIOD}
    r["pids"] = {"limit": res["pids_limit"]}
    return cfg
