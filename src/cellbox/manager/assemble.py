"""The parts of a sandbox, as one table: made in order on create, removed in reverse.

Every sandbox, however it starts (booted from an image, restored from a snapshot or
a clone's capture), is the same six parts::

    address    the record holding a free address (inserted first: reconcile's anchor)
    rootfs     the state dir and the rootfs subvolume (from the source)
    netns      the netns + veth, or (user namespace) the idmapped rootfs + the hook
    egress     the egress policy's rules (before any tenant code runs)
    bundle     the OCI config (in the state dir)
    container  the container started (``runc run`` or CRIU restore), its agent ready

Create makes them in this order and pushes each part's ``remove`` *before* its
``make`` runs (every ``remove`` is idempotent, so a part that failed half-way is
removed too); a failure unwinds them all, and every cleanup error is reported, not
just the first. ``teardown(id)`` walks the same table in reverse from the ID alone,
for destroy and for reconcile (a crash may have left any subset). The record is
finalised last: ``running`` after the last part, ``failed`` after the undo.

What differs between sources (where the rootfs comes from, how the bundle is made,
how the container starts) is ``sources.py``; everything host-side goes through the
seams in ``ports.py``, so this module's logic is tested without root
(``tests/unit/manager/test_assemble.py``).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import faults, ids
from ..config import Settings
from ..errors import CellboxError, CommandFailed, InternalFailure, LimitExceeded, NameTaken, NoSpace
from ..network.egress import Resolved
from ..network.policy import EgressPolicy
from ..runtime import bundle, userns
from ..storage import rootfs as rootfs_files
from . import addresses, agent_client, limits
from .ports import Agent, Network, Runtime, Storage
from .records import SandboxRecord, Status, now_ms
from .sources import Plan, Source
from .store import Store

log = logging.getLogger(__name__)
# A create slower than this logs the time of each part (where a slow create went:
# the live migration's restore on its target, a loaded host).
SLOW_ASSEMBLY_S = 1.0

AGENT_READY_TIMEOUT = 15.0
Address = ipaddress.IPv4Address | None


class TeardownFailed(ExceptionGroup, InternalFailure):  # type: ignore[override]  # message: the group's, read-only
    """Some parts of a sandbox could not be removed: all their errors, as a group.

    Both an ``ExceptionGroup`` (``except*`` sees each error) and an ``InternalFailure``
    (the API answers 500 with every error named; reconcile logs and goes on)."""

    def __new__(cls, sandbox_id: str, errors: list[Exception]) -> TeardownFailed:
        message = f"teardown of {sandbox_id} was incomplete: " + "; ".join(map(str, errors))
        return super().__new__(cls, message, errors)

    def __init__(self, sandbox_id: str, errors: list[Exception]) -> None:
        # ``message`` (ExceptionGroup's, read-only) is the one CellboxError renders.
        super().__init__(self.message, errors)
        self.sandbox_id = sandbox_id

    def __str__(self) -> str:
        return self.message

    def derive(self, excs: Any) -> ExceptionGroup[Exception]:  # type: ignore[override]
        return ExceptionGroup(self.message, list(excs))


@dataclass
class Build:
    """One create in progress: what the parts made so far, for the parts after them."""

    rec: SandboxRecord
    source: Source
    state_dir: Path
    policy: EgressPolicy | None = None
    resolved: Resolved | None = None
    cpu_shares: int | None = None
    root: Path | None = None  # the rootfs subvolume (made by the rootfs part)
    identity: dict[str, Any] = field(default_factory=dict)  # bundle.set_identity's arguments
    cfg: dict[str, Any] = field(default_factory=dict)  # the bundle config
    steps: dict[str, float] = field(default_factory=dict)  # seconds within a part, for the slow log

    @property
    def address(self) -> ipaddress.IPv4Address:
        assert self.rec.ip
        return ipaddress.IPv4Address(self.rec.ip)


@dataclass(frozen=True)
class Part:
    """One part of a sandbox: ``make`` it for a build, ``remove`` it by ID (idempotent).

    ``after`` is the fault point hit once it is made (``faults.py``; the crash tests
    kill the server there)."""

    name: str
    make: Callable[[Build], Awaitable[None]]
    remove: Callable[[str, Address], Awaitable[None]]
    after: str | None = None


class Assembler:
    """Makes and removes sandboxes' parts on this host (the node side: no API, no proxy)."""

    def __init__(self, settings: Settings, store: Store, runtime: Runtime, storage: Storage, network: Network,
                 agent: Agent) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.storage = storage
        self.network = network
        self.agent = agent
        self._ip_lock = asyncio.Lock()
        self.volumes: Any = None  # manager/volumes.VolumeManager, set by the manager (volumes hook)
        self.parts: tuple[Part, ...] = (
            Part("address", self._allocate_part, _released_with_record, after="create.after_record"),
            Part("rootfs", self._make_rootfs, self._remove_rootfs, after="create.after_rootfs"),
            Part("netns", self._make_netns, self._remove_netns),
            Part("egress", self._make_egress, self._remove_egress, after="create.after_netns"),
            Part("bundle", self._make_bundle, _kept_in_state_dir),
            Part("volumes", self._make_volumes, self._remove_volumes),  # volumes hook (manager/volumes.py)
            Part("container", self._make_container, self._remove_container),
        )

    def state_dir(self, sandbox_id: str) -> Path:
        return self.settings.sandboxes_dir / sandbox_id

    # -- create -------------------------------------------------------------------------

    async def create(self, plan: Plan, *, namespace: str, name: str | None, timeout_secs: int | None,
                     sandbox_id: str | None = None, cpu_shares: int | None = None,
                     resolved: Resolved | None = None) -> SandboxRecord:
        """A running sandbox from ``plan``: its record, its parts, then (a memory
        restore) the plan's limits applied live; a failure there destroys it again."""
        if resolved is None:
            resolved = await self.network.resolve(plan.policy)
        res = plan.resources
        rec = SandboxRecord(
            id=sandbox_id or ids.new_id(), namespace=namespace, name=name, image=plan.image, cpus=res["cpus"],
            memory_mb=res["memory_mb"], disk_mb=res["disk_mb"], pids_limit=res["pids_limit"],
            timeout_secs=timeout_secs, extra=dict(plan.extra),
        )
        if plan.policy is not None:
            rec.extra["network_policy"] = plan.policy.to_wire()
        await self.assemble(rec, plan.source, policy=plan.policy, resolved=resolved, cpu_shares=cpu_shares)
        if plan.live_limits:
            try:
                limits.apply(self.state_dir(rec.id), self.storage.rootfs_path(rec.id), rec.id, cpus=rec.cpus,
                             memory_mb=rec.memory_mb, pids_limit=rec.pids_limit,
                             writable_mb=rec.disk_mb - plan.source.image_mb)
            except BaseException:
                await self.teardown(rec.id)
                self._record_failure(rec, InternalFailure("its limits could not be applied"), [])
                raise
        return rec

    async def assemble(self, rec: SandboxRecord, source: Source, *, policy: EgressPolicy | None = None,
                       resolved: Resolved | None = None, cpu_shares: int | None = None) -> SandboxRecord:
        """Make every part of ``rec`` from ``source``; ``rec`` is ``running`` when it returns.

        The address part comes first and outside the undo: before it there is no
        record, so its errors (name taken, no address) are the caller's, plain. After
        it any failure unwinds the parts made, marks the record ``failed`` with the
        reason (and every cleanup error), and re-raises.
        """
        b = Build(rec, source, self.state_dir(rec.id), policy, resolved, cpu_shares)
        first, *rest = self.parts
        took: dict[str, float] = {}
        t = time.monotonic()
        await first.make(b)
        took[first.name] = time.monotonic() - t
        _fault(first.after)
        made: list[Part] = []
        try:
            for part in rest:
                made.append(part)  # before make: a half-made part is removed too
                t = time.monotonic()
                await part.make(b)
                took[part.name] = time.monotonic() - t
                _fault(part.after)
        except BaseException as exc:
            errors = await self._remove(reversed(made), rec.id, b.address)
            self._record_failure(rec, exc, errors)
            raise
        if (total := sum(took.values())) >= SLOW_ASSEMBLY_S:
            log.info("sandbox %s took %.0f ms to assemble: %s (within: %s)", rec.id, total * 1000,
                     ", ".join(f"{name} {s * 1000:.0f}" for name, s in took.items()),
                     ", ".join(f"{name} {s * 1000:.0f}" for name, s in b.steps.items()))
        rec.status = Status.RUNNING
        self.store.update(rec)
        faults.hit("create.after_running")
        return rec

    def _record_failure(self, rec: SandboxRecord, exc: BaseException, errors: list[Exception]) -> None:
        rec.status = Status.FAILED
        rec.error = str(exc) if isinstance(exc, CellboxError) else f"{type(exc).__name__}: {exc}"
        if errors:
            rec.error += " (cleanup also failed: " + "; ".join(map(str, errors)) + ")"
        rec.termination_reason = "startup_failed"
        rec.terminated_at = now_ms()
        self.store.update(rec)

    async def allocate(self, rec: SandboxRecord) -> None:
        """Pick the lowest free address and insert the record holding it.

        Safe across processes sharing the database (a test manager beside a server):
        the unique index on live addresses rejects a race loser, who picks again.
        """
        async with self._ip_lock:
            for _ in range(64):
                used = self.store.ips_in_use()
                addresses.check_room(self.settings.subnet, self.store.on_bridge())
                addr = addresses.lowest_free(self.settings.subnet, self.settings.gateway, used)
                if addr is None:
                    raise LimitExceeded("no free sandbox address left in " + str(self.settings.subnet))
                rec.ip = str(addr)
                if rec.name and self.store.get_by_name(rec.namespace, rec.name):
                    raise NameTaken(rec.name)
                try:
                    self.store.insert(rec)
                    return
                except sqlite3.IntegrityError:
                    if rec.name and self.store.get_by_name(rec.namespace, rec.name):
                        raise NameTaken(rec.name) from None
                    continue  # another process took this address first
            raise LimitExceeded("could not allocate a sandbox address (too much contention)")

    async def _allocate_part(self, b: Build) -> None:
        await self.allocate(b.rec)

    async def _make_rootfs(self, b: Build) -> None:
        b.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            b.root = await b.source.make_rootfs(self.storage, b.rec)
        except (OSError, CommandFailed) as exc:
            if (full := no_space(exc)) is not None:
                raise full from exc
            raise
        # A live migration's restore keeps the sandbox's hostname (RestoreSource.hostname).
        hostname = getattr(b.source, "hostname", lambda rec: rec.id)(b.rec)
        rootfs_files.write_identity(b.root, hostname=hostname, nameserver=str(self.settings.gateway))

    async def _make_netns(self, b: Build) -> None:
        """The rootfs, network and id range of the sandbox (``bundle.set_identity``'s
        arguments), with what they need made on the host.

        With user namespaces: the rootfs subvolume idmapped into the sandbox's range,
        and a prestart hook that wires the netns runc will make (its walls pinned here
        first). Without: the netns made here, and joined by the container. A memory
        image restores the namespaces it was dumped with (``source.use_userns``).
        """
        assert b.root is not None
        if not b.source.use_userns(self.settings):
            ns_path = await self.network.create_netns(b.rec.id, b.address)
            b.identity = {"rootfs": b.root, "netns_path": ns_path, "userns_base": None, "hooks": None}
            return
        base = userns.host_base(self.settings.subnet, str(b.address))
        userns.restrict(b.state_dir, base)
        mnt = userns.mount_path(b.state_dir)
        t = time.monotonic()
        await self.runtime.mount_idmapped(b.root, mnt, base)
        b.steps["idmap"], t = time.monotonic() - t, time.monotonic()
        wiring = await self.network.prepare_hook(b.rec.id, b.address)
        b.steps["prepare_hook"] = time.monotonic() - t
        b.identity = {"rootfs": mnt, "netns_path": None, "userns_base": base,
                      "hooks": await self.runtime.netns_hook(wiring, base)}

    async def _make_egress(self, b: Build) -> None:
        if b.policy is None or b.policy.unrestricted:
            return
        await self.network.apply_egress(b.rec.id, str(b.address), b.policy, b.resolved)

    async def _make_bundle(self, b: Build) -> None:
        assert b.root is not None
        b.cfg = b.source.bundle_config(b.rec, b.identity, self.settings, b.cpu_shares)
        # An image (or a hostile snapshot) can come with /.cellbox or /proc as a link:
        # runc and CRIU get real directories to mount on.
        rootfs_files.prepare_mount_points(b.root, bundle.mount_points(b.cfg))
        bundle.write(b.state_dir, b.cfg)

    async def _make_volumes(self, b: Build) -> None:
        if self.volumes is not None:
            await self.volumes.make_part(b)

    async def _remove_volumes(self, sandbox_id: str, address: Address) -> None:
        if self.volumes is not None:
            await self.volumes.teardown(sandbox_id)

    async def _make_container(self, b: Build) -> None:
        t = time.monotonic()
        b.rec.init_pid = await b.source.start(self.runtime, b.rec, b.state_dir, b.identity)
        b.steps["start"], t = time.monotonic() - t, time.monotonic()
        faults.hit("create.after_container")
        old = b.source.agent_key(b.cfg)
        await self.agent.wait_ready(str(b.address), self.settings.agent_port, old, init_pid=b.rec.init_pid,
                                    log_path=b.state_dir / "runc.log", timeout=AGENT_READY_TIMEOUT)
        b.steps["agent_ready"], t = time.monotonic() - t, time.monotonic()
        await b.source.after_ready(self.rotate_key, b.rec, old)
        b.steps["after_ready"] = time.monotonic() - t

    async def rotate_key(self, rec: SandboxRecord, old: bytes | None) -> None:
        """Give a restored agent a secret of its own (it came back with the dumped one).

        The record and the bundle's environment both get the new key: a later snapshot
        copies the bundle config, and its restores authenticate with what is there.
        A sandbox from before agent keys (``old`` None) is left without one.
        """
        if old is None:
            rec.extra.pop(agent_client.KEY_FIELD, None)
            return
        assert rec.ip
        new = await self.agent.rotate(rec.ip, self.settings.agent_port, old)
        path = self.state_dir(rec.id) / "config.json"
        cfg = json.loads(path.read_text())
        agent_client.set_env_key(cfg, new)
        bundle.write(path.parent, cfg)
        rec.extra[agent_client.KEY_FIELD] = new
        self.store.update(rec)

    # -- teardown -------------------------------------------------------------------------

    async def teardown(self, sandbox_id: str) -> None:
        """Remove every part a sandbox may own, derived from its ID; idempotent.

        The same table as create, in reverse: the container first, and the idmapped
        mount before the subvolume and the state dir (a removal must never walk into
        the sandbox's files through it). Every part is tried; all errors are raised
        together (``TeardownFailed``)."""
        rec = self.store.get(sandbox_id)
        address = ipaddress.IPv4Address(rec.ip) if rec is not None and rec.ip else None
        errors = await self._remove(reversed(self.parts), sandbox_id, address, faults_prefix="destroy")
        if errors:
            raise TeardownFailed(sandbox_id, errors)

    async def _remove(self, parts: Any, sandbox_id: str, address: Address, *,
                      faults_prefix: str | None = None) -> list[Exception]:
        errors: list[Exception] = []
        for part in parts:
            try:
                await part.remove(sandbox_id, address)
                if faults_prefix:
                    faults.hit(f"{faults_prefix}.after_{part.name}")
            except Exception as exc:  # noqa: BLE001 - keep going, report them all
                errors.append(exc)
        return errors

    async def _remove_container(self, sandbox_id: str, address: Address) -> None:
        await self.runtime.destroy(ids.container(sandbox_id))

    async def _remove_egress(self, sandbox_id: str, address: Address) -> None:
        await self.network.remove_egress(sandbox_id)

    async def _remove_netns(self, sandbox_id: str, address: Address) -> None:
        errors: list[Exception] = []
        try:
            await self.network.remove_netns(sandbox_id, address)
        except Exception as exc:  # noqa: BLE001 - the unmount must be tried anyway
            errors.append(exc)
        try:
            await self.runtime.unmount(userns.mount_path(self.state_dir(sandbox_id)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        if errors:
            raise errors[0] if len(errors) == 1 else ExceptionGroup("netns", errors)

    async def _remove_rootfs(self, sandbox_id: str, address: Address) -> None:
        state_dir = self.state_dir(sandbox_id)
        if os.path.ismount(userns.mount_path(state_dir)):  # the netns part's unmount failed
            raise InternalFailure(f"{sandbox_id}: its rootfs is still mounted in its state dir; both kept")
        try:
            await self.storage.remove_rootfs(sandbox_id)
        finally:
            await asyncio.to_thread(shutil.rmtree, state_dir, True)


async def _released_with_record(sandbox_id: str, address: Address) -> None:
    """The address is free once the record is final, which its owner writes last."""


async def _kept_in_state_dir(sandbox_id: str, address: Address) -> None:
    """The bundle is a file in the state dir: it goes with the rootfs part."""


def _fault(point: str | None) -> None:
    if point is not None:
        faults.hit(point)


def no_space(exc: BaseException) -> NoSpace | None:
    """A full pool, seen as ENOSPC/EDQUOT from a call or in a btrfs tool's stderr."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace("the storage pool is full: no room for a new sandbox's root filesystem "
                       "(delete sandboxes or snapshots, or grow the pool)")
    if isinstance(exc, CommandFailed) and "No space left on device" in exc.message:
        return NoSpace(f"the storage pool is full: {exc.message}")
    return None
