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
import base64
import binascii
import logging
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any


from .. import ids
from ..auth.door import Door
from ..auth.keys import Principal
from ..errors import (CellboxError, Conflict, InternalFailure, InvalidRequest, NoSpace, NotFound, QuotaExceeded,
                      RateLimited)
from . import agent_client
from .records import SandboxRecord, Status, now_ms
from ..network.policy import EgressPolicy
from .sandboxes import DEFAULT_DISK_MB, CreateSpec, SandboxManager
from .snapshot_store import SnapshotRecord, SnapshotType
from .warm import WARM_NAMESPACE

log = logging.getLogger(__name__)

# How long a DELETE or PATCH waits for a create of another process to settle.
FOREIGN_PENDING_WAIT = 30.0
# How long server stop waits for creates in flight before leaving them to reconcile.
STOP_WAIT = 20.0
RESERVED_PORTS = frozenset({9501})
# How many of a sandbox's processes (the newest) the logs route reads output from.
LOG_PROCESSES = 50
# One logs answer holds at most the newest LOG_MAX_LINES lines and LOG_MAX_BYTES of
# text: a chatty sandbox's whole output (100 MB) once took the server from 128 to
# 594 MB and stalled its event loop for 6 s. ``tail`` asks for fewer.
LOG_MAX_LINES = 10_000
LOG_MAX_BYTES = 4 << 20
INIT_LOG_BYTES = 256 << 10
IDLE_RETRY_FIRST = 30.0  # seconds before an idle suspend that failed is tried again
IDLE_RETRY_MAX = 3600.0  # of the runtime's own log file, from its end


@dataclass(frozen=True)
class CreateOptions:
    """A create request: the runtime spec plus what the API stores beside it."""

    spec: CreateSpec
    exposed_ports: tuple[int, ...] = ()
    allow_unauthenticated_access: bool = False
    auto_resume: bool = True
    entrypoint: tuple[str, ...] | None = None
    snapshot_id: str | None = None
    secret_names: tuple[str, ...] = ()


@dataclass
class Changes:
    """A PATCH: only the fields the client sent (``None`` = leave as is)."""

    name: str | None = None
    exposed_ports: list[int] | None = None
    allow_unauthenticated_access: bool | None = None
    auto_resume: bool | None = None
    # The spec's tri-state: ``network_set`` False = keep; True with None = clear
    # (unrestricted); True with a policy = replace it atomically.
    network_set: bool = False
    network: EgressPolicy | None = None


@dataclass(frozen=True)
class LogLine:
    timestamp: int  # ms; the start of the process that printed it
    body: str
    pid: int | None
    command: str | None


@dataclass
class Page:
    records: list[SandboxRecord]
    next_cursor: str | None = None


class SandboxService:
    def __init__(self, manager: SandboxManager, *, proxy_port: int, door: Door | None = None) -> None:
        self.manager = manager
        self.door = door  # keys, quotas, secrets; None: no quotas and no secrets (tests)
        self.store = manager.store
        self.proxy_url = f"http://localhost:{proxy_port}"
        self._creating: dict[str, asyncio.Task[SandboxRecord]] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._background: set[asyncio.Task[SandboxRecord]] = set()
        # Idle suspends that failed: sandbox ID -> (monotonic time of the next try, delay).
        self._idle_backoff: dict[str, tuple[float, float]] = {}
        # Last proxy traffic per sandbox (monotonic seconds), for idle suspend later.
        self.last_activity: dict[str, float] = {}

    # -- create -------------------------------------------------------------------------

    async def create(self, opts: CreateOptions, *, wait: bool, budget: float | None) -> SandboxRecord:
        """Start a create; return the record when it is running, or earlier.

        ``wait=False`` returns as soon as the sandbox has a record (usually ``pending``);
        a ``budget`` (seconds) returns the record as it is when the budget runs out. In
        both cases the create goes on in the background. Errors found before the
        sandbox has a record (bad spec, unknown image, name taken) are raised; a
        failure after that is reported as a ``failed`` record.
        """
        # cluster: a node creates under the ID the control plane chose (cluster/actions.py)
        sid = opts.spec.sandbox_id or ids.new_id()
        if opts.snapshot_id:  # another project's snapshot is a 404, before anything is made
            self.manager.memory.get_snapshot(opts.snapshot_id, opts.spec.namespace)
        env = self._secret_env(opts)  # an unknown name is a 400 before anything is made
        self._admit(opts.spec, sid)  # a quota: 403 / 429, also before anything is made
        spec = replace(opts.spec, sandbox_id=sid)
        task = asyncio.ensure_future(self._create(spec, opts, env))
        self._creating[sid] = task
        task.add_done_callback(lambda t: self._create_done(sid, t))
        if wait:
            await asyncio.wait({task}, timeout=budget)
        return await self._once_recorded(task, sid)

    def _secret_env(self, opts: CreateOptions) -> dict[str, str]:
        """The create's ``secret_names`` as variables, decrypted; 400 naming unknown ones."""
        names = list(dict.fromkeys(opts.secret_names))
        if not names:
            return {}
        if self.door is None:
            raise InvalidRequest("secret_names: this server keeps no secrets")
        sealed = self.door.store.sealed_secrets(opts.spec.namespace, names)
        if missing := [n for n in names if n not in sealed]:
            raise InvalidRequest(f"secret_names: no secret named {', '.join(map(repr, missing))} in this project "
                                 "(cellbox secret set NAME)", code="SECRET_NOT_FOUND")
        return {n: self.door.vault.open(sealed[n]) for n in names}

    def _admit(self, spec: CreateSpec, sid: str, *, copies: int = 1) -> list[str]:
        """Check the project's quotas and hold the resources of ``copies`` new sandboxes;
        returns the hold IDs (released by ``_release``). Atomic across processes."""
        if self.door is None:
            return []
        store = self.door.store
        limits = store.get_quota(spec.namespace)
        if not limits:
            return []
        disk = spec.disk_mb or DEFAULT_DISK_MB
        holds: list[str] = []
        for i in range(copies):
            hold = sid if i == 0 else ids.new_id()
            verdict = store.admit_create(spec.namespace, hold, spec.cpus, spec.memory_mb, disk, limits)
            if verdict is None:
                holds.append(hold)
                continue
            self._release(holds)
            if isinstance(verdict, int):
                raise RateLimited(f"project {spec.namespace!r}: more than {limits['creates_per_minute']:g} creates "
                                  f"a minute; retry in {verdict} s", retry_after=verdict)
            name, value, use = verdict
            raise QuotaExceeded(f"project {spec.namespace!r}: quota {name} is {value:g}, {use:g} in use; "
                                "this create would pass it")
        return holds

    def _release(self, holds: list[str]) -> None:
        if self.door is not None:
            for hold in holds:
                self.door.store.release_hold(hold)

    def quota_usage(self, project: str) -> dict[str, float]:
        """A project's use of each quota'd resource (for ``GET /quotas/{project}``)."""
        assert self.door is not None
        use: dict[str, float] = self.door.store.usage(project)
        snaps = self.manager.memory.snapshots.list(project, None)
        use["snapshots"] = len(snaps)
        use["snapshot_bytes"] = sum(s.size_bytes or 0 for s in snaps)
        return use

    def _check_snapshot_quota(self, project: str) -> None:
        if self.door is None or not (limits := self.door.store.get_quota(project)):
            return
        use = self.quota_usage(project)
        for name in ("snapshots", "snapshot_bytes"):
            value = limits.get(name)
            if value is not None and use[name] + (1 if name == "snapshots" else 0) > value:
                raise QuotaExceeded(f"project {project!r}: quota {name} is {value:g}, {use[name]:g} in use")

    async def _create(self, spec: CreateSpec, opts: CreateOptions, env: dict[str, str]) -> SandboxRecord:
        if opts.snapshot_id:
            rec = await self.manager.memory.restore(
                opts.snapshot_id, namespace=spec.namespace, name=spec.name,
                timeout_secs=spec.timeout_secs, sandbox_id=spec.sandbox_id, network=spec.network,
            )
        else:
            rec = await self.manager.create(spec)
        rec.exposed_ports = list(opts.exposed_ports)
        rec.allow_unauthenticated_access = opts.allow_unauthenticated_access
        rec.auto_resume = opts.auto_resume
        rec.entrypoint = list(opts.entrypoint) if opts.entrypoint else None
        if rec.entrypoint is None and not opts.snapshot_id:
            # The image's ENTRYPOINT (+ CMD as its arguments), as `docker run` would.
            rec.entrypoint = self.manager.image_manager.entrypoint(rec.image)
        self.store.update(rec)
        if env:
            await self._inject_env(rec, env)
        if rec.entrypoint:
            await self._start_entrypoint(rec)
        return rec

    async def _inject_env(self, rec: SandboxRecord, env: dict[str, str]) -> None:
        """Give the agent the create's secrets before anyone can start a process that
        needs them. A sandbox that did not get them is destroyed: one that silently
        runs without its secrets would fail later in ways hard to trace."""
        ip, port = self.manager.agent_address(rec)
        try:
            status, _ = await self.manager.agent.call(ip, port, agent_client.key_of(rec), "PUT",
                                                      "/_cellbox/v1/env", json_body={"env": env})
            problem = None if status == 200 else f"agent answered {status}"
        except agent_client.AgentError as exc:
            problem = f"could not reach the agent: {exc.code}"  # never the body: it holds values
        if problem:
            await self.manager.destroy(rec.id, rec.namespace, reason="failed")
            raise InternalFailure(f"sandbox {rec.id}: secrets could not be given to it ({problem}); destroyed")

    def _create_done(self, sid: str, task: asyncio.Task[SandboxRecord]) -> None:
        self._creating.pop(sid, None)
        self._release([sid])
        if not task.cancelled() and (exc := task.exception()) is not None and not isinstance(exc, CellboxError):
            log.error("create of %s failed unexpectedly", sid, exc_info=exc)

    async def _once_recorded(self, task: asyncio.Task[SandboxRecord], sid: str) -> SandboxRecord:
        """The create's result if it is done, else its record as soon as one exists."""
        while True:
            if task.done():
                try:
                    return self._fresh(task.result())
                except Exception as exc:
                    rec = self.store.get(sid)
                    # Failed before anything was made: a plain error. A full pool too (507,
                    # errors.NoSpace): it is the host's state, not this sandbox's, and the
                    # client should learn it from the status; the record stays, failed.
                    if rec is None or isinstance(exc, NoSpace):
                        raise
                    return rec  # failed while building: a failed sandbox
            rec = self.store.get(sid)
            if rec is not None:
                return rec
            await asyncio.wait({task}, timeout=0.005)

    async def _start_entrypoint(self, rec: SandboxRecord) -> None:
        """Run the sandbox's entrypoint as a background process of its agent."""
        assert rec.entrypoint
        ip, port = self.manager.agent_address(rec)
        body = {"command": rec.entrypoint[0], "args": rec.entrypoint[1:]}
        try:
            status, raw = await self.manager.agent.call(ip, port, agent_client.key_of(rec), "POST",
                                                        "/api/v1/processes", json_body=body, max_bytes=1 << 20)
        except agent_client.AgentError as exc:
            problem = f"could not start it through the agent: {exc}"
        else:
            if status == 201:
                info = _parse_or_none(raw)
                rec.extra["entrypoint_pid"] = info.get("pid") if isinstance(info, dict) else None
                self.store.update(rec)
                return
            problem = raw[:500].decode("utf-8", "replace")
        log.warning("sandbox %s: entrypoint %s did not start: %s", rec.id, rec.entrypoint, problem)
        rec.extra["entrypoint_error"] = problem
        self.store.update(rec)


    # -- read -----------------------------------------------------------------------------

    def get(self, ref: str, namespace: str) -> SandboxRecord:
        rec = self.manager.get(ref, namespace)
        if rec.namespace != namespace:
            raise NotFound(f"sandbox {ref!r} not found", code="SANDBOX_NOT_FOUND")
        return rec

    def list(
        self, namespace: str, *, statuses: list[str] | None, live_only: bool, cursor: str | None, limit: int
    ) -> Page:
        after = _decode_cursor(cursor) if cursor else None
        recs = self.store.list_page(namespace, statuses=statuses, live_only=live_only, after=after, limit=limit + 1)
        if len(recs) > limit:
            recs = recs[:limit]
            return Page(recs, _encode_cursor(recs[-1]))
        return Page(recs)

    async def logs(self, rec: SandboxRecord, *, process_id: int | None = None,
                   tail: int | None = None) -> tuple[list[LogLine], bool]:
        """What the sandbox's processes printed, as its agent still holds it (the newest
        ``LOG_PROCESSES`` processes, stdout and stderr merged in order), after the init's
        own output if the runtime kept it; and whether lines were left out.

        Bounded: at most the newest ``tail`` (default and cap ``LOG_MAX_LINES``) lines and
        ``LOG_MAX_BYTES`` of text, asked of the agent per process from the newest process
        back (``?tail=&max_bytes=``), so neither the agent's answer nor ours is ever the
        whole output. Best effort: an agent that cannot be asked (or answers what it
        should not) gives no lines, not an error. A sandbox that is not running has none.
        """
        want = LOG_MAX_LINES if tail is None else min(tail, LOG_MAX_LINES)
        budget = LOG_MAX_BYTES
        init = [LogLine(rec.created_at, line, None, "init") for line in self._init_log(rec)]
        if rec.status != Status.RUNNING or not rec.ip:
            return (init[len(init) - want:] if want else []), len(init) > want
        cut = False
        ip, port, key = rec.ip, self.manager.settings.agent_port, agent_client.key_of(rec)
        agent = self.manager.agent
        chunks: list[list[LogLine]] = []
        try:
            listing = await agent.get_json(ip, port, key, "/api/v1/processes", timeout=5, max_bytes=4 << 20)
            procs = [p for p in listing["processes"][-10_000:] if isinstance(p, dict)]
            procs = sorted(procs, key=lambda p: _int_or(p.get("started_at"), 0))[-LOG_PROCESSES:]
            for proc in reversed(procs):  # newest first, until the budget is spent
                pid = _int_or(proc.get("pid"), -1)
                if process_id is not None and pid != process_id:
                    continue
                if want <= 0 or budget <= 0:
                    cut = True
                    break
                out = await agent.get_json(ip, port, key,
                                           f"/api/v1/processes/{pid}/output?tail={want}&max_bytes={budget}",
                                           timeout=5, max_bytes=2 * budget + (64 << 10))
                lines = [x for x in out["lines"] if isinstance(x, str)][-want:]
                cut = cut or bool(out.get("truncated"))
                started = _int_or(proc.get("started_at"), rec.created_at)
                command = proc.get("command") if isinstance(proc.get("command"), str) else None
                chunks.append([LogLine(started, line, pid, command) for line in lines])
                want -= len(lines)
                budget -= sum(len(x) + 1 for x in lines)
        except (agent_client.AgentError, KeyError, TypeError, AttributeError) as exc:
            log.warning("sandbox %s: reading process output for logs failed: %s", rec.id, exc)
        lines = [line for chunk in reversed(chunks) for line in chunk]
        room = (LOG_MAX_LINES if tail is None else min(tail, LOG_MAX_LINES)) - len(lines)
        cut = cut or len(init) > max(0, room)
        return (init[len(init) - room:] if room > 0 else []) + lines, cut

    def _init_log(self, rec: SandboxRecord) -> list[str]:
        path = self.manager.settings.sandboxes_dir / rec.id / "agent.log"
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - INIT_LOG_BYTES))
                return f.read(INIT_LOG_BYTES).decode("utf-8", "replace").splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return []

    # -- delete -----------------------------------------------------------------------------

    async def delete(self, ref: str, namespace: str, *, reason: str = "user_terminated") -> SandboxRecord:
        """Terminate a sandbox; a final one is left as it is (DELETE is idempotent).

        A sandbox still being created is cancelled: the create is let finish (stopping
        ``runc`` or ``btrfs`` half-way would leave parts nobody owns), then the sandbox
        is destroyed with ``termination_reason: cancelled``.
        """
        rec = self.get(ref, namespace)
        async with self._lock(rec.id):
            rec, was_pending = await self._settled(rec)
            if rec.status.is_final:
                return rec
            return await self.manager.destroy(rec.id, rec.namespace, reason="cancelled" if was_pending else reason)

    async def expire(self, rec: SandboxRecord) -> SandboxRecord | None:
        """Destroy a sandbox whose ``timeout_secs`` ran out, unless it changed meanwhile."""
        async with self._lock(rec.id):
            current = self.store.get(rec.id)
            if current is None or current.status != Status.RUNNING:
                return None
            return await self.manager.destroy(rec.id, rec.namespace, reason="timeout")

    async def refresh(self, rec: SandboxRecord) -> SandboxRecord | None:
        """``manager.refresh`` under the sandbox's lock, so it never races a delete.
        Returns the record if the refresh found the sandbox dead, else None."""
        async with self._lock(rec.id):
            current = self.store.get(rec.id)
            if current is None or current.status != Status.RUNNING:
                return None  # changed meanwhile (deleted, expired): not ours to judge
            after = await self.manager.refresh(current)
            return after if after.status != Status.RUNNING else None

    async def _settled(self, rec: SandboxRecord) -> tuple[SandboxRecord, bool]:
        """``rec`` once it is no longer pending, and whether it was pending."""
        if rec.status != Status.PENDING:
            return rec, False
        task = self._creating.get(rec.id)
        if task is not None:
            await asyncio.wait({task})
        else:
            deadline = time.monotonic() + FOREIGN_PENDING_WAIT
            while (cur := self.store.get(rec.id)) is not None and cur.status == Status.PENDING:
                if time.monotonic() > deadline:
                    raise Conflict(f"sandbox {rec.id} is still being created; try again", code="SANDBOX_PENDING")
                await asyncio.sleep(0.05)
        fresh = self.store.get(rec.id)
        if fresh is None:
            raise NotFound(f"sandbox {rec.id!r} not found", code="SANDBOX_NOT_FOUND")
        return fresh, True

    # -- update -----------------------------------------------------------------------------

    async def update(self, ref: str, namespace: str, changes: Changes) -> SandboxRecord:
        rec = self.get(ref, namespace)
        async with self._lock(rec.id):
            rec, _ = await self._settled(rec)
            if rec.status.is_final:
                raise Conflict(f"sandbox {rec.id} is {rec.status.value}", code="SANDBOX_NOT_RUNNING")
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
            raise Conflict(f"sandbox {rec.id} is {rec.status.value}; its network cannot change yet",
                           code="INVALID_STATE")
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
            raise InvalidRequest("only named sandboxes can be suspended (ephemeral ones are terminated)",
                                 code="SANDBOX_NOT_NAMED")
        return await self._bounded(self._suspend(rec.id), rec.id, Status.SUSPENDED, wait_s)

    async def _suspend(self, sandbox_id: str) -> SandboxRecord:
        async with self._lock(sandbox_id):
            rec = self.store.get(sandbox_id)
            if rec is None or rec.status.is_final:
                raise Conflict(f"sandbox {sandbox_id} is gone", code="SANDBOX_NOT_RUNNING")
            rec, _ = await self._settled(rec)
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
            raise InvalidRequest(f"sandbox {rec.id} is {rec.status.value}, not suspended", code="INVALID_STATE")
        return await self._bounded(self._resume(rec.id), rec.id, Status.RUNNING, wait_s)

    async def _resume(self, sandbox_id: str) -> SandboxRecord:
        async with self._lock(sandbox_id):
            out = await self.manager.memory.resume(sandbox_id)
            self.on_activity(sandbox_id)
            return out

    async def _bounded(self, coro: "Coroutine[Any, Any, SandboxRecord]", sandbox_id: str, target: Status,
                       wait_s: float | None) -> tuple[SandboxRecord, bool]:
        """Run a state change in the background; wait for it at most ``wait_s`` seconds.

        The change goes on after the request returns (202), so a client that polls
        sees it settle; errors of a change nobody waits for are logged.
        """
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        if wait_s is None or wait_s > 0:
            await asyncio.wait({task}, timeout=wait_s)
        if task.done():
            rec = task.result()  # raises the change's error to the waiting client
            return rec, rec.status == target
        rec = self.store.get(sandbox_id)
        assert rec is not None
        return rec, rec.status == target

    def _background_done(self, task: "asyncio.Task[SandboxRecord]") -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, CellboxError):
                log.warning("background state change failed: %s", exc)
            else:
                log.error("background state change failed", exc_info=exc)

    async def snapshot(self, ref: str, namespace: str, snapshot_type: SnapshotType) -> SnapshotRecord:
        rec = self.get(ref, namespace)
        self._check_snapshot_quota(rec.namespace)
        async with self._lock(rec.id):
            return await self.manager.memory.snapshot(rec.id, rec.namespace, snapshot_type)

    async def copy(self, ref: str, namespace: str, times: int) -> tuple[SandboxRecord, list[SandboxRecord | CellboxError]]:
        rec = self.get(ref, namespace)
        holds = self._admit(CreateSpec(cpus=rec.cpus, memory_mb=rec.memory_mb, disk_mb=rec.disk_mb,
                                       namespace=rec.namespace), ids.new_id(), copies=times)
        try:
            async with self._lock(rec.id):
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
        denied = auth_error or NotFound(f"sandbox {ref!r} not found", code="SANDBOX_NOT_FOUND")
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
            raise NotFound(f"sandbox {rec.id} is {rec.status.value}: it no longer accepts requests",
                           code="SANDBOX_TERMINATED")
        if rec.status in (Status.SUSPENDED, Status.SUSPENDING) and rec.auto_resume:
            rec = await self._resume(rec.id)
        ip, agent_port = self.manager.agent_address(rec)
        if port == agent_port:  # the agent must prove itself with the sandbox's key
            return ip, agent_port, rec.id, agent_client.key_of(rec)
        if port not in rec.exposed_ports:
            raise Conflict(f"port {port} of sandbox {rec.id} is not exposed", code="PORT_NOT_EXPOSED")
        return ip, port, rec.id

    def on_activity(self, sandbox_id: str) -> None:
        self.last_activity[sandbox_id] = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Wait (bounded) for creates in flight; reconcile handles any left over."""
        pending = list(self._creating.values()) + list(self._background)
        if pending:
            log.info("waiting for %d create(s) in flight", len(pending))
            await asyncio.wait(pending, timeout=STOP_WAIT)

    @asynccontextmanager
    async def _lock(self, sandbox_id: str) -> AsyncIterator[None]:
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        async with lock:
            yield

    def _fresh(self, rec: SandboxRecord) -> SandboxRecord:
        return self.store.get(rec.id) or rec


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a sandbox named {name!r} already exists", code="NAME_TAKEN")


def _encode_cursor(rec: SandboxRecord) -> str:
    return base64.urlsafe_b64encode(f"{rec.created_at}:{rec.id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, sid = raw.partition(":")
        if not ids.is_id(sid):
            raise ValueError(sid)
        return int(created), sid
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("cursor: not a cursor this server returned") from None


def _int_or(value: Any, default: int) -> int:
    """An int the agent sent, or ``default`` for anything else (it is untrusted input)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _parse_or_none(raw: bytes) -> Any:
    try:
        return agent_client.parse_json(raw)
    except agent_client.AgentError:
        return None
