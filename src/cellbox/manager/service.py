"""What the API and the proxy ask of the manager, with the server's policies on top.

The manager knows how to make and remove one sandbox. This layer adds what only a
long-running server needs: creates that outlive the request that started them
(``wait: false``, a client's time budget), cancelling a create that is still going,
one mutation at a time per sandbox, the settings the API stores beside the runtime
state (ports, flags, entrypoint), and the two hooks the proxy calls. It speaks
records and ``cellbox.errors``, never HTTP: the API layer renders and maps.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Coroutine
from typing import Any

from .. import ids, observe
from ..auth.keys import Principal
from ..errors import (
    CellboxError,
    InvalidRequest,
    InvalidState,
    NotFound,
    PortNotExposed,
    QuotaExceeded,
    SandboxNotFound,
    SandboxNotNamed,
    SandboxNotRunning,
    SandboxTerminated,
)
from ..network.policy import EgressPolicy
from . import addresses, agent_client
from . import resize as live_resize
from .logs import LogLine
from .records import SandboxRecord, Status, now_ms
from .service_core import (
    FOREIGN_PENDING_WAIT,
    IDLE_RETRY_FIRST,
    IDLE_RETRY_MAX,
    RESERVED_PORTS,
    STOP_WAIT,
    Changes,
    CreateOptions,
    Page,
    ServiceCore,
    _decode_cursor,
    _encode_cursor,
    _name_taken,
)
from .snapshot_store import SnapshotRecord, SnapshotType
from .spec import CreateSpec
from .warm import WARM_NAMESPACE

log = logging.getLogger(__name__)
__all__ = ["FOREIGN_PENDING_WAIT", "RESERVED_PORTS", "STOP_WAIT", "Changes", "CreateOptions", "LogLine", "Page",
           "ManagerService", "SandboxService", "_decode_cursor", "_encode_cursor"]


class SandboxService(ServiceCore):
    """The only door for ``api/`` and the proxy into the manager."""

    # -- update -----------------------------------------------------------------------------

    async def update(self, ref: str, namespace: str, changes: Changes) -> SandboxRecord:
        rec = self.get(ref, namespace)
        async with self._lock(rec.id):
            rec, _ = await self._settled(rec)
            if rec.status.is_final:
                raise SandboxNotRunning(rec.id, rec.status.value)
            if changes.resize is not None:  # issue 14: live resize (manager/resize.py)
                return await live_resize.resize(self.manager, self.door, rec, changes.resize)
            if changes.name is not None and changes.name != rec.name:
                if problem := ids.name_problem(changes.name):
                    raise InvalidRequest(f"name: {problem}")
                if self.store.get_by_name(rec.namespace, changes.name):
                    raise _name_taken(changes.name)
                rec.name = changes.name
            if changes.exposed_ports is not None:
                rec.exposed_ports = list(changes.exposed_ports)
            if changes.allow_unauthenticated_access is not None:
                rec.allow_unauthenticated_access = changes.allow_unauthenticated_access
            if changes.auto_resume is not None:
                if not changes.auto_resume and not rec.name:
                    raise InvalidRequest("auto_resume: false needs a named sandbox")
                rec.auto_resume = changes.auto_resume
            if changes.network_set:
                await self._set_network(rec, changes.network)
            try:
                self.store.update(rec)
            except sqlite3.IntegrityError:
                raise _name_taken(rec.name or "") from None
            return rec

    async def _set_network(self, rec: SandboxRecord, policy: EgressPolicy | None) -> None:
        """Replace a sandbox's egress policy in place (running or suspended: the rules
        are keyed by its address, which it keeps). Names are resolved first: one that
        does not resolve is a 400 and the old policy stays."""
        if policy is not None and policy.unrestricted:
            policy = None
        resolved = await self.manager.egress.resolve(policy)
        if rec.status == Status.PENDING or not rec.ip:
            raise InvalidState(rec.id, rec.status.value, "; its network cannot change yet")
        await self.manager.egress.apply(rec.id, rec.ip, policy, resolved)
        if policy is None:
            rec.extra.pop("network_policy", None)
        else:
            rec.extra["network_policy"] = policy.to_wire()

    # -- memory state -------------------------------------------------------------------------

    async def suspend(self, ref: str, namespace: str, *, wait_s: float | None) -> tuple[SandboxRecord, bool]:
        """Suspend a named sandbox; returns (record, settled) after at most ``wait_s``."""
        rec = self.get(ref, namespace)
        if not rec.name:
            raise SandboxNotNamed()
        return await self._bounded(self._suspend(rec.id), rec.id, Status.SUSPENDED, wait_s)

    async def _suspend(self, sandbox_id: str) -> SandboxRecord:
        async with self._lock(sandbox_id):
            rec = self.store.get(sandbox_id)
            if rec is None or rec.status.is_final:
                raise SandboxNotRunning(sandbox_id, "gone")
            rec, _ = await self._settled(rec)
            await self._run_hooks(self.before_suspend, rec)  # issue 14: logs readable while it sleeps
            try:
                out = await self.manager.memory.suspend(rec.id, rec.namespace)
            except CellboxError:
                # Any failed suspend (asked for or idle) holds idle suspend back.
                delay = min(IDLE_RETRY_MAX, self._idle_backoff.get(rec.id, (0.0, IDLE_RETRY_FIRST / 2))[1] * 2)
                self._idle_backoff[rec.id] = (time.monotonic() + delay, delay)
                raise
            self._idle_backoff.pop(rec.id, None)
            self.last_activity.pop(rec.id, None)
            return out

    async def resume(self, ref: str, namespace: str, *, wait_s: float | None) -> tuple[SandboxRecord, bool]:
        rec = self.get(ref, namespace)
        if rec.status not in (Status.SUSPENDED, Status.SUSPENDING, Status.RUNNING):
            raise InvalidState(rec.id, rec.status.value, ", not suspended", status=400)
        return await self._bounded(self._resume(rec.id), rec.id, Status.RUNNING, wait_s)

    async def _resume(self, sandbox_id: str) -> SandboxRecord:
        async with self._lock(sandbox_id):
            current = self.store.get(sandbox_id)
            if current is not None and current.status == Status.SUSPENDED:
                # a suspended sandbox has no bridge port; resuming takes one (addresses.py)
                addresses.check_room(self.manager.settings.subnet, self.store.on_bridge(), resuming=True)
            with observe.timed("resume"):  # metrics hook (cellbox/metrics)
                out = await self.manager.memory.resume(sandbox_id)
            self.on_activity(sandbox_id)
            return out

    async def _bounded(self, coro: "Coroutine[Any, Any, SandboxRecord]", sandbox_id: str, target: Status,
                       wait_s: float | None) -> tuple[SandboxRecord, bool]:
        """Run a state change in the background; wait for it at most ``wait_s`` seconds.

        The change goes on after the request returns (202), so a client that polls
        sees it settle; errors of a change nobody waits for are logged.
        """
        task = self._background.spawn(coro)
        if wait_s is None or wait_s > 0:
            await asyncio.wait({task}, timeout=wait_s)
        if task.done():
            rec = task.result()  # raises the change's error to the waiting client
            return rec, rec.status == target
        now = self.store.get(sandbox_id)
        assert now is not None
        rec = now
        return rec, rec.status == target

    async def snapshot(self, ref: str, namespace: str, snapshot_type: SnapshotType) -> SnapshotRecord:
        rec = self.get(ref, namespace)
        held = self.admission.admit_snapshot(rec.namespace)  # door: count and bytes, atomic
        try:
            async with self._lock(rec.id):
                snap = await self.manager.memory.snapshot(rec.id, rec.namespace, snapshot_type)
            if (over := self.admission.snapshot_bytes_over(rec.namespace, held)) is not None:
                await self.manager.memory.delete_snapshot(snap.id)
                raise QuotaExceeded(over)
            return snap
        finally:
            self.admission.release_snapshot(held)

    async def copy(self, ref: str, namespace: str, times: int) -> tuple[SandboxRecord, list[SandboxRecord | CellboxError]]:
        rec = self.get(ref, namespace)
        holds = self._admit(CreateSpec(cpus=rec.cpus, memory_mb=rec.memory_mb, disk_mb=rec.disk_mb,
                                       namespace=rec.namespace), ids.new_id(), copies=times)
        try:
            async with self._lock(rec.id):
                with observe.timed("clone"):  # metrics hook (cellbox/metrics)
                    copies = await self.manager.memory.clone(rec.id, times, rec.namespace)
        finally:
            self._release(holds)
        for c in copies:
            if isinstance(c, SandboxRecord):
                c.exposed_ports = list(rec.exposed_ports)
                c.allow_unauthenticated_access = rec.allow_unauthenticated_access
                self.store.update(c)
        return rec, copies

    def get_snapshot(self, snapshot_id: str, namespace: str) -> SnapshotRecord:
        return self.manager.memory.get_snapshot(snapshot_id, namespace)

    def list_snapshots(self, namespace: str, sandbox_ref: str | None = None) -> list[SnapshotRecord]:
        sandbox_id = None
        if sandbox_ref is not None:
            sandbox_id = self.get(sandbox_ref, namespace).id
        return self.manager.memory.snapshots.list(namespace, sandbox_id)

    async def delete_snapshot(self, snapshot_id: str, namespace: str) -> None:
        await self.manager.memory.delete_snapshot(snapshot_id, namespace)

    async def idle_suspend(self, rec: SandboxRecord) -> None:
        """Suspend a named sandbox whose ``timeout_secs`` passed without proxy traffic.

        A failure is logged, recorded on the sandbox (``last_error``, by the suspend
        itself) and backs off (``IDLE_RETRY_FIRST`` s, doubling to ``IDLE_RETRY_MAX``):
        the sweep runs every second and a failing CRIU dump must not run that often.
        """
        if not self.idle_suspend_due(rec):
            return
        try:
            await self._suspend(rec.id)
        except CellboxError as exc:
            delay = self._idle_backoff.get(rec.id, (0.0, 0.0))[1]
            log.warning("idle suspend of %s failed (next try in %.0fs): %s", rec.id, delay, exc)

    def idle_suspend_due(self, rec: SandboxRecord) -> bool:
        """False while an idle suspend that failed is backing off."""
        entry = self._idle_backoff.get(rec.id)
        return entry is None or time.monotonic() >= entry[0]

    def idle_seconds(self, rec: SandboxRecord) -> float:
        """Seconds since the last proxy request (or since it started running)."""
        last = self.last_activity.get(rec.id)
        if last is not None:
            return time.monotonic() - last
        started = max(rec.created_at, int(rec.extra.get("resumed_at", 0)))
        return max(0.0, (now_ms() - started) / 1000)

    # -- proxy hooks ------------------------------------------------------------------------

    async def resolve(self, ref: str, port: int, principal: Principal | None,
                      auth_error: CellboxError | None = None) -> tuple[str, int, str] | tuple[str, int, str, bytes | None]:
        """Where the proxy sends a request for ``ref`` (an ID, or a name in the key's project).

        ``principal`` is the request's key (None: it showed no valid one, and
        ``auth_error`` says why). A sandbox of another project is a 404, like one that
        does not exist. Without a key only the exposed ports of a sandbox created with
        ``allow_unauthenticated_access`` are reachable, by ID; everything else is the
        key's 401, whether the sandbox exists or not (so a probe learns nothing).
        A suspended sandbox with ``auto_resume`` is resumed first: the request waits,
        then goes through (spec §4.3).
        """
        denied = auth_error or SandboxNotFound(ref)
        if principal is None and not ids.is_id(ref):
            raise denied  # names are per project: without a key there is no project to look in
        try:
            rec = self.manager.get(ref, principal.project if principal else "default")
        except NotFound:
            raise denied from None
        if rec.namespace == WARM_NAMESPACE:  # not handed out yet: nobody's sandbox
            raise denied
        if principal is None or not principal.may_use(rec.namespace):
            open_port = rec.allow_unauthenticated_access and port in rec.exposed_ports
            if not open_port or port == self.manager.settings.agent_port:
                raise denied
        if rec.status.is_final:  # the proxy answers 410 (proxy/errors.py)
            raise SandboxTerminated(rec.id, rec.status.value)
        if rec.status in (Status.SUSPENDED, Status.SUSPENDING) and rec.auto_resume:
            rec = await self._resume(rec.id)
        ip, agent_port = self.manager.agent_address(rec)
        if port == agent_port:  # the agent must prove itself with the sandbox's key
            return ip, agent_port, rec.id, agent_client.key_of(rec)
        if port not in rec.exposed_ports:
            raise PortNotExposed(port, rec.id)
        return ip, port, rec.id

    def on_activity(self, sandbox_id: str) -> None:
        self.last_activity[sandbox_id] = time.monotonic()


# The name the other branches know this class by (issue 11: "ManagerService").
ManagerService = SandboxService
