"""Sandbox lifecycle: create and destroy, as steps with undo; state from the kernel.

Create validates the whole request first, then makes each part, pushing its inverse
on an undo stack right after it exists: address → rootfs → netns → bundle →
container → agent ready. Any failure unwinds what was made, marks the record
``failed`` with the reason, and re-raises. Destroy runs the same inverses, derived
from the ID, so it also cleans up after a crash that left only some of the parts.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import faults, ids
from .._undo import Undo
from ..config import Settings
from ..errors import CellboxError, CommandFailed, Conflict, InternalFailure, InvalidRequest, LimitExceeded, NoSpace, NotFound
from ..network import dns, netns
from ..network.egress import EgressControl, Resolved
from ..network.policy import EgressPolicy
from ..runtime import agentfs, bundle, cgroups, checkpoint, nethook, userns
from ..runtime.runc import Runc
from ..storage import images as images_mod
from ..storage import pool as pool_mod
from ..storage import rootfs
from . import agent_client
from .agent_client import AgentClient
from .records import SandboxRecord, Status, now_ms
from .images import ImageManager
from .memstate import MemoryState
from .store import Store
from .volumes import VolumeManager
from .warm import WarmPool

log = logging.getLogger(__name__)

AGENT_READY_TIMEOUT = 15.0
_REC_KEY: Any = object()  # _wait_agent's default: the key in the record
MIN_MEMORY_MB = 64
MIN_FREE_DISK_MB = 64
DEFAULT_DISK_MB = 10240


@dataclass(frozen=True)
class CreateSpec:
    image: str | None = None
    cpus: float = 1.0
    memory_mb: int = 1024
    disk_mb: int | None = None
    pids_limit: int = 1024
    name: str | None = None
    namespace: str = "default"
    timeout_secs: int | None = None
    # A pre-chosen ID (the API answers a non-blocking create with it before the
    # sandbox exists); only create_cold honours it, a warm sandbox keeps its own.
    sandbox_id: str | None = None
    # Egress policy (None: unrestricted); its host names are resolved before any part
    # of the sandbox is made, so a name that does not resolve costs nothing.
    network: EgressPolicy | None = None
    # cgroup CPU weight (v1 cpu.shares) to start with; None is the kernel's default.
    # The warm pool builds at the lowest weight, so a refill takes only the CPU the
    # sandboxes in use leave idle; a claim restores the default (warm.py).
    cpu_shares: int | None = None


class SandboxManager:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.images = images_mod.ImageStore(settings)
        self.runc = Runc(settings.runc, settings.runc_root)
        self._ip_lock = asyncio.Lock()
        self._agentfs: Path | None = None
        self._nethook: Path | None = None
        self._dns: dns.DnsForwarder | None = None
        self.egress = EgressControl(settings.nft_table, settings.run_dir, str(settings.gateway),
                                    lambda: self.dns_upstreams)
        self.warm: WarmPool | None = None
        self.warm_image_mb = 0
        self.memory = MemoryState(self)
        self.image_manager = ImageManager(self)
        self.agent = AgentClient()  # every host -> agent call goes through it (agent_client.py)
        self.volumes = VolumeManager(self)  # volumes hook: manager/volumes.py

    # -- service start/stop -----------------------------------------------------------

    async def start(self) -> None:
        """Make the host-wide parts (bridge, nft table, resolver) and reconcile state."""
        from ..network import host

        await host.ensure(self.settings)
        upstreams = self.settings.dns_upstream.split(",") if self.settings.dns_upstream else dns.host_upstreams()
        self._dns = dns.DnsForwarder(str(self.settings.gateway), upstreams,
                                     override_file=self.settings.data_dir / "dns-upstreams",
                                     egress=self.egress,
                                     max_tcp_per_client=self.settings.dns_tcp_per_sandbox)
        await self._dns.start()
        self._agentfs_tree()
        if self.settings.userns:
            self._nethook = await asyncio.to_thread(nethook.ensure, self.settings.bin_dir)
        checkpoint.write_criu_config(self.settings.data_dir / "criu.conf")
        await self.volumes.sweep()  # volumes hook: host-side mounts of ended sandboxes
        if self.settings.warm_pool_size > 0:
            image = await self.images.resolve(self.settings.default_image)
            self.warm_image_mb = image.size_bytes >> 20
            self.warm = WarmPool(self, self.settings.warm_pool_size)
            self.warm.fill()
        self.image_manager.start_pools()

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
        rec = self.store.get(ref) if ids.is_id(ref) else None
        if rec is None:
            rec = self.store.get_by_name(namespace, ref)
        if rec is None:
            raise NotFound(f"sandbox {ref!r} not found", code="SANDBOX_NOT_FOUND")
        return rec

    def agent_address(self, rec: SandboxRecord) -> tuple[str, int]:
        if rec.status != Status.RUNNING or not rec.ip:
            raise Conflict(f"sandbox {rec.id} is {rec.status.value}, not running", code="SANDBOX_NOT_RUNNING")
        return rec.ip, self.settings.agent_port

    # -- create -------------------------------------------------------------------------

    def _validate(self, spec: CreateSpec) -> None:
        host_cpus = os.cpu_count() or 1
        if not (0.01 <= spec.cpus <= host_cpus):
            raise InvalidRequest(f"cpus must be between 0.01 and {host_cpus} (this host's cores), got {spec.cpus}")
        host_mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
        if not (MIN_MEMORY_MB <= spec.memory_mb <= host_mem_mb):
            raise InvalidRequest(f"memory_mb must be between {MIN_MEMORY_MB} and {host_mem_mb}, got {spec.memory_mb}")
        if spec.disk_mb is not None and spec.disk_mb <= 0:
            raise InvalidRequest(f"disk_mb must be positive, got {spec.disk_mb}")
        if not (16 <= spec.pids_limit <= 1 << 20):
            raise InvalidRequest(f"pids_limit must be between 16 and 1048576, got {spec.pids_limit}")
        if spec.name is not None and (problem := ids.name_problem(spec.name)):
            raise InvalidRequest(problem)
        if spec.timeout_secs is not None and spec.timeout_secs < 0:
            raise InvalidRequest("timeout_secs must be >= 0")

    def _agentfs_tree(self) -> Path:
        if self._agentfs is None:
            self._agentfs = agentfs.ensure(self.settings.agentfs)
        return self._agentfs

    async def _allocate(self, rec: SandboxRecord) -> None:
        """Pick the lowest free address and insert the record holding it.

        Safe across processes sharing the database (a test manager beside a server):
        the unique index on live addresses rejects a race loser, who picks again.
        """
        async with self._ip_lock:
            for _ in range(64):
                used = self.store.ips_in_use()
                gateway = self.settings.gateway
                for addr in self.settings.subnet.hosts():
                    if addr != gateway and str(addr) not in used:
                        rec.ip = str(addr)
                        break
                else:
                    raise LimitExceeded("no free sandbox address left in " + str(self.settings.subnet))
                if rec.name and self.store.get_by_name(rec.namespace, rec.name):
                    raise Conflict(f"a sandbox named {rec.name!r} already exists", code="NAME_TAKEN")
                try:
                    self.store.insert(rec)
                    return
                except sqlite3.IntegrityError:
                    if rec.name and self.store.get_by_name(rec.namespace, rec.name):
                        raise Conflict(f"a sandbox named {rec.name!r} already exists", code="NAME_TAKEN") from None
                    continue  # another process took this address first
            raise LimitExceeded("could not allocate a sandbox address (too much contention)")

    def _is_default_image(self, image: str | None) -> bool:
        default = self.settings.default_image
        return image in (None, default, images_mod.normalize(default))

    async def create(self, spec: CreateSpec) -> SandboxRecord:
        """Create a running sandbox: from the warm pool if one fits, else from scratch;
        any image but the default one goes through the image manager (named, pulled,
        registered and pre-booted images)."""
        self._validate(spec)
        if not self._is_default_image(spec.image):
            return await self.image_manager.create(spec)
        resolved = await self.egress.resolve(spec.network)
        if self.warm is not None and self.warm.can_serve(spec):
            rec = await self.claim_warm(self.warm, spec, self.warm_image_mb, resolved)
            if rec is not None:
                return rec
        return await self.create_cold(spec, resolved)

    async def claim_warm(self, pool: WarmPool, spec: CreateSpec, image_mb: int,
                         resolved: Resolved | None) -> SandboxRecord | None:
        """A sandbox from ``pool`` shaped to ``spec`` (limits, name, egress), or None."""
        disk_mb = self._disk_mb(spec, image_mb)
        if spec.name and self.store.get_by_name(spec.namespace, spec.name):
            raise Conflict(f"a sandbox named {spec.name!r} already exists", code="NAME_TAKEN")
        rec = await pool.claim(spec, disk_mb)
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
            raise Conflict(f"a sandbox named {spec.name!r} already exists", code="NAME_TAKEN") from None
        except BaseException:
            await self.destroy(rec.id, rec.namespace, reason="startup_failed")
            raise
        return rec

    def _disk_mb(self, spec: CreateSpec, image_mb: int) -> int:
        disk_mb = spec.disk_mb or max(DEFAULT_DISK_MB, image_mb + MIN_FREE_DISK_MB)
        if disk_mb < image_mb + MIN_FREE_DISK_MB:
            raise InvalidRequest(
                f"disk_mb={disk_mb} is too small for the image ({image_mb} MiB): "
                f"ask for at least {image_mb + MIN_FREE_DISK_MB}"
            )
        return disk_mb

    async def create_cold(self, spec: CreateSpec, resolved: Resolved | None = None) -> SandboxRecord:
        """Build a sandbox from scratch: storage, network, container, agent."""
        self._validate(spec)
        if resolved is None:
            resolved = await self.egress.resolve(spec.network)
        pool = pool_mod.check_pool(self.settings)
        image = await self.images.resolve(spec.image or self.settings.default_image)
        image_mb = image.size_bytes >> 20
        disk_mb = self._disk_mb(spec, image_mb)
        tree = self._agentfs_tree()
        rec = SandboxRecord(
            id=spec.sandbox_id or ids.new_id(), namespace=spec.namespace, name=spec.name, image=image.name,
            cpus=spec.cpus, memory_mb=spec.memory_mb, disk_mb=disk_mb, pids_limit=spec.pids_limit,
            timeout_secs=spec.timeout_secs, extra={"image_mb": image_mb},
        )
        if spec.network is not None:
            rec.extra["network_policy"] = spec.network.to_wire()
        await self._allocate(rec)
        faults.hit("create.after_record")
        undo = Undo()
        try:
            await self._build(rec, image.rootfs, tree, pool, undo, spec.network, resolved, spec.cpu_shares,
                              image.config)
        except BaseException as exc:
            errors = await undo.unwind()
            rec.status = Status.FAILED
            rec.error = str(exc) if isinstance(exc, CellboxError) else f"{type(exc).__name__}: {exc}"
            rec.termination_reason = "startup_failed"
            rec.terminated_at = now_ms()
            if errors:
                rec.error += f" (cleanup also failed: {errors[0]})"
            self.store.update(rec)
            raise
        undo.discard()
        return rec

    async def _build(self, rec: SandboxRecord, image_rootfs: Path, tree: Path, pool: Path, undo: Undo,
                     network: EgressPolicy | None = None, resolved: Resolved | None = None,
                     cpu_shares: int | None = None,
                     image_config: images_mod.ImageConfig | None = None) -> None:
        sid = rec.id
        state_dir = self.settings.sandboxes_dir / sid
        state_dir.mkdir(parents=True, exist_ok=True)
        undo.push("state dir", lambda: _rmtree(state_dir))

        try:
            faults.hit("create.rootfs")  # CELLBOX_FAULT_POINT=create.rootfs:enospc: a full pool
            root = await rootfs.create(pool, sid, image_rootfs, rec.disk_mb - rec.extra["image_mb"])
            undo.push("rootfs", lambda: rootfs.remove(pool, sid))
            rootfs.write_identity(root, hostname=sid, nameserver=str(self.settings.gateway))
        except (OSError, CommandFailed) as exc:
            raise no_space(exc) or exc
        faults.hit("create.after_rootfs")

        identity = await self.prepare_identity(rec, root, undo)
        await self.apply_egress(rec, network, resolved, undo)
        faults.hit("create.after_netns")

        key = agent_client.new_key()  # this agent's own secret (agent/auth.py)
        rec.extra[agent_client.KEY_FIELD] = key
        cfg = bundle.config(
            agent_secret=key, hostname=sid, agentfs_tree=tree, **identity, cgroups_path=ids.cgroup_path(sid),
            limits=bundle.Limits(rec.cpus, rec.memory_mb, rec.pids_limit, cpu_shares),
            agent_port=self.settings.agent_port, criu_config=self.volumes.criu_config(sid),  # volumes hook
            image_env=image_config.env if image_config else None,
            workdir=image_config.working_dir if image_config else "/",
            user=image_config.user if image_config else "",
        )
        # An image can come with /.cellbox (or /proc...) as a link: made real dirs first.
        rootfs.prepare_mount_points(root, bundle.mount_points(cfg))
        bundle.write(state_dir, cfg)
        undo.push("container", lambda: self.runc.destroy(ids.container(sid)))
        rec.init_pid = await self.runc.run_detached(ids.container(sid), state_dir)
        faults.hit("create.after_container")
        await self._wait_agent(rec, state_dir / "runc.log")
        rec.status = Status.RUNNING
        self.store.update(rec)
        faults.hit("create.after_running")

    async def prepare_identity(self, rec: SandboxRecord, subvolume: Path, undo: Undo,
                               use_userns: bool | None = None) -> dict[str, Any]:
        """The rootfs, network and id range of a sandbox about to start (``bundle.set_identity``'s
        arguments), with what they need made on the host.

        With user namespaces: the rootfs subvolume idmapped into the sandbox's range,
        and a prestart hook that wires the netns runc will make (its inverse is pushed
        now: the hook may have run by the time a later step fails). Without: the netns
        made here, and joined by the container. ``use_userns`` overrides the setting
        (a memory image restores the namespaces it was dumped with).
        """
        sid = rec.id
        assert rec.ip
        if use_userns is None:
            use_userns = self.settings.userns
        address = ipaddress.IPv4Address(rec.ip)
        if not use_userns:
            await netns.create(self.settings, sid, address)
            undo.push("netns", lambda: netns.destroy(self.settings, sid, address))
            return {"rootfs": subvolume, "netns_path": netns.path(sid), "userns_base": None, "hooks": None}
        base = userns.host_base(self.settings.subnet, rec.ip)
        userns.restrict(self.settings.sandboxes_dir / sid, base)
        mnt = userns.mount_path(self.settings.sandboxes_dir / sid)
        await asyncio.to_thread(userns.mount_idmapped, subvolume, mnt, base)
        undo.push("idmapped rootfs", lambda: asyncio.to_thread(userns.unmount, mnt))
        # The hook makes the veth inside runc; the port's walls (what it may send as, the
        # host's neighbour entry) are ours to pin first, from here (network/walls.py).
        undo.push("netns", lambda: netns.destroy(self.settings, sid, address))
        await netns.pin_walls(self.settings, sid, address)
        if self._nethook is None:
            self._nethook = await asyncio.to_thread(nethook.ensure, self.settings.bin_dir)
        return {"rootfs": mnt, "netns_path": None, "userns_base": base,
                "hooks": nethook.hooks(self._nethook, self.settings, sid, rec.ip)}

    async def apply_egress(self, rec: SandboxRecord, network: EgressPolicy | None,
                           resolved: Resolved | None, undo: Undo) -> None:
        """Install the egress rules of a sandbox being built (before its container starts)."""
        if network is None or network.unrestricted:
            return
        assert rec.ip
        undo.push("egress rules", lambda: self.egress.remove(rec.id))
        await self.egress.apply(rec.id, rec.ip, network, resolved)

    async def _wait_agent(self, rec: SandboxRecord, log_path: Path, key: Any = _REC_KEY) -> None:
        """Poll the agent's port until it accepts, then check it is our agent (its proof
        under ``key``, by default the record's); fail fast if the container died."""
        assert rec.ip
        deadline = time.monotonic() + AGENT_READY_TIMEOUT
        delay = 0.002
        while True:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(rec.ip, self.settings.agent_port), 0.5)
                writer.close()
                break
            except (OSError, asyncio.TimeoutError):
                pass
            if rec.init_pid and not _alive(rec.init_pid):
                raise InternalFailure(f"the sandbox agent exited during start-up: {_tail(log_path)}")
            if time.monotonic() > deadline:
                raise InternalFailure(f"the sandbox agent did not start within {AGENT_READY_TIMEOUT:.0f}s: {_tail(log_path)}")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.02)
        # The port accepts: now make sure it is our agent that answers there, not a
        # program the tenant (or a restored image) put in its place.
        key = agent_client.key_of(rec) if key is _REC_KEY else key
        if key is not None:
            left = max(1.0, deadline - time.monotonic())
            status, _ = await self.agent.call(rec.ip, self.settings.agent_port, key, "GET", "/api/v1/health",
                                              timeout=left, max_bytes=4096)
            if status != 200:
                raise agent_client.AgentError(f"the sandbox's agent answered {status} to its health check")

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
        errors: list[BaseException] = []
        pool = self.settings.pool
        rec = self.store.get(sandbox_id)
        address = ipaddress.IPv4Address(rec.ip) if rec is not None and rec.ip else None
        for step in (
            lambda: self.runc.destroy(ids.container(sandbox_id)),
            lambda: _fault("destroy.after_container"),
            lambda: netns.destroy(self.settings, sandbox_id, address),
            lambda: self.egress.remove(sandbox_id),
            # Before the subvolume and the state dir: a removal must never walk into
            # the sandbox's files through their idmapped mount.
            lambda: asyncio.to_thread(userns.unmount, userns.mount_path(self.settings.sandboxes_dir / sandbox_id)),
            lambda: self.volumes.teardown(sandbox_id),  # volumes hook: host-side mounts first
            lambda: rootfs.remove(pool, sandbox_id),
            lambda: _rmtree(self.settings.sandboxes_dir / sandbox_id),
        ):
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - keep going, report at the end
                errors.append(exc)
        if errors:
            raise InternalFailure(f"teardown of {sandbox_id} was incomplete: {errors[0]}")

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


async def _fault(point: str) -> None:
    faults.hit(point)


def no_space(exc: BaseException) -> NoSpace | None:
    """A full pool, seen as ENOSPC/EDQUOT from a call or in a btrfs tool's stderr."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace("the storage pool is full: no room for a new sandbox's root filesystem "
                       "(delete sandboxes or snapshots, or grow the pool)")
    if isinstance(exc, CommandFailed) and "No space left on device" in exc.message:
        return NoSpace(f"the storage pool is full: {exc.message}")
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip() or "(no output)"
    except FileNotFoundError:
        return "(no log)"


async def _rmtree(path: Path) -> None:
    await asyncio.to_thread(shutil.rmtree, path, True)
