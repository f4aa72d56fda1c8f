"""The service's core: creates that outlive their request, reads, deletes.

``service.py`` builds on it (updates, memory state, the proxy's hooks); split only to
keep each file one concern and under the size limit. See ``service.py``'s docstring
for what this layer adds to the lifecycle.
"""

from __future__ import annotations

import builtins

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from .. import ids, observe
from ..agent.config import DEFAULT_PORT as AGENT_PORT
from ..auth.door import Door
from ..errors import (
    CellboxError,
    Conflict,
    InternalFailure,
    InvalidRequest,
    NameTaken,
    NoSpace,
    SandboxNotFound,
    SandboxPending,
)
from ..network.policy import EgressPolicy
from . import agent_client
from . import logs as logs_mod
from .admission import Admission
from .lifecycle import SandboxManager
from .locks import LockRegistry
from .logs import LogLine
from .records import SandboxRecord, Status
from .resize import Target
from .spec import CreateSpec
from .tasks import TaskSet

log = logging.getLogger(__name__)

# How long a DELETE or PATCH waits for a create of another process to settle.
FOREIGN_PENDING_WAIT = 30.0
# How long server stop waits for creates in flight before leaving them to reconcile.
STOP_WAIT = 20.0
RESERVED_PORTS = frozenset({AGENT_PORT})
IDLE_RETRY_FIRST = 30.0  # seconds before an idle suspend that failed is tried again
IDLE_RETRY_MAX = 3600.0


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
    # What makes the sandbox (default: ``manager.create``); a pool claim passes its own
    # (pools/service.py), so quotas, secrets and the entrypoint apply to claims too.
    creator: Callable[[CreateSpec], Awaitable[SandboxRecord]] | None = None
    file_systems: tuple[Any, ...] = ()  # volume_mounts.MountSpec, mounted before hand-out


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
    resize: Target | None = None  # issue 14: a live resize; never mixed with the fields above


@dataclass
class Page:
    records: list[SandboxRecord]
    next_cursor: str | None = None


class ServiceCore:
    def __init__(self, manager: SandboxManager, *, proxy_port: int, door: Door | None = None) -> None:
        self.manager = manager
        self.door = door  # keys, quotas, secrets; None: no quotas and no secrets (tests)
        self.admission = Admission(door, manager.memory.snapshots)
        self.admission.volumes = manager.volumes  # volumes hook: volume_bytes in the usage
        self.store = manager.store
        self.proxy_url = f"http://localhost:{proxy_port}"
        self.ingress_endpoint: str | None = None  # door: base of {port}-{id}.{domain} URLs (server.py sets it)
        self._creating: dict[str, asyncio.Task[SandboxRecord]] = {}
        # One registry for the whole server: the memory-state layer locks the same
        # sandbox IDs from its own (a different lock object per layer is fine: the
        # service's serialises requests, memstate's guards CRIU images).
        self._locks = LockRegistry()
        self._background = TaskSet("background state change")
        # Idle suspends that failed: sandbox ID -> (monotonic time of the next try, delay).
        self._idle_backoff: dict[str, tuple[float, float]] = {}
        # Last proxy traffic per sandbox (monotonic seconds), for idle suspend later.
        self.last_activity: dict[str, float] = {}
        # Called with a running sandbox's record just before the server ends it (delete,
        # timeout) or suspends it: issue 14's log keeper (logs/service.py) saves its output.
        self.before_terminate: list[Callable[[SandboxRecord], Awaitable[None]]] = []
        self.before_suspend: list[Callable[[SandboxRecord], Awaitable[None]]] = []
        self.on_close: list[Callable[[], Awaitable[None]]] = []  # issue 14: the log collector's

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
        self.manager.volumes.precheck(opts.spec.namespace, list(opts.file_systems))  # volumes hook: 404/409 first
        self._admit(opts.spec, sid)  # a quota: 403 / 429, also before anything is made
        spec = replace(opts.spec, sandbox_id=sid)
        task = asyncio.ensure_future(self._create(spec, opts, env))
        self._creating[sid] = task
        task.add_done_callback(lambda t: self._create_done(sid, t))
        if wait:
            await asyncio.wait({task}, timeout=budget)
        return await self._once_recorded(task, sid)

    async def created(self, sandbox_id: str) -> None:
        """Wait until a create in flight for ``sandbox_id`` has done its last step (a
        record written after then is not overwritten by the create's own copy)."""
        if (task := self._creating.get(sandbox_id)) is not None:
            await asyncio.wait({task})

    def _secret_env(self, opts: CreateOptions) -> dict[str, str]:
        """The create's ``secret_names`` as variables, decrypted; 400 naming unknown ones."""
        return self.admission.secret_env(opts.spec.namespace, opts.secret_names)

    def _admit(self, spec: CreateSpec, sid: str, *, copies: int = 1) -> list[str]:
        return self.admission.admit(spec, sid, copies=copies)

    def _release(self, holds: list[str]) -> None:
        self.admission.release(holds)

    def quota_usage(self, project: str) -> dict[str, float]:
        """A project's use of each quota'd resource (for ``GET /quotas/{project}``)."""
        return self.admission.quota_usage(project)

    async def _create(self, spec: CreateSpec, opts: CreateOptions, env: dict[str, str]) -> SandboxRecord:
        with observe.timed("restore" if opts.snapshot_id else "create"):  # metrics hook (cellbox/metrics)
            if opts.snapshot_id:
                rec = await self.manager.create_from_snapshot(opts.snapshot_id, spec)
            else:
                rec = await (opts.creator or self.manager.create)(spec)
        rec.exposed_ports = list(opts.exposed_ports)
        rec.allow_unauthenticated_access = opts.allow_unauthenticated_access
        rec.auto_resume = opts.auto_resume
        rec.entrypoint = list(opts.entrypoint) if opts.entrypoint else None
        if rec.entrypoint is None and not opts.snapshot_id:
            # The image's ENTRYPOINT (+ CMD as its arguments), as `docker run` would.
            rec.entrypoint = self.manager.image_manager.entrypoint(rec.image)
        self.store.update(rec)
        if opts.file_systems:  # volumes hook: mounted before any process of the tenant's runs
            rec = await self.manager.volumes.attach_or_destroy(rec, list(opts.file_systems))
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
            raise SandboxNotFound(ref)
        return rec

    def list(
        self, namespace: str, *, statuses: builtins.list[str] | None, live_only: bool, cursor: str | None, limit: int
    ) -> Page:
        after = _decode_cursor(cursor) if cursor else None
        recs = self.store.list_page(namespace, statuses=statuses, live_only=live_only, after=after, limit=limit + 1)
        if len(recs) > limit:
            recs = recs[:limit]
            return Page(recs, _encode_cursor(recs[-1]))
        return Page(recs)

    async def logs(self, rec: SandboxRecord, *, process_id: int | None = None,
                   tail: int | None = None) -> tuple[builtins.list[LogLine], bool]:
        """What the sandbox's processes printed (``logs.read``: bounded, best effort)."""
        return await logs_mod.read(self.manager.agent, self.manager.settings.agent_port,
                                   self.manager.settings.sandboxes_dir, rec, process_id=process_id, tail=tail)


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
            await self._run_hooks(self.before_terminate, rec)
            return await self.manager.destroy(rec.id, rec.namespace, reason="cancelled" if was_pending else reason)

    @staticmethod
    async def _run_hooks(hooks: "builtins.list[Callable[[SandboxRecord], Awaitable[None]]]", rec: SandboxRecord) -> None:
        for hook in hooks:
            try:
                await hook(rec)
            except Exception:  # noqa: BLE001 - a hook must never keep a sandbox alive or awake
                log.exception("sandbox %s: hook %s failed", rec.id, getattr(hook, "__qualname__", hook))

    async def expire(self, rec: SandboxRecord) -> SandboxRecord | None:
        """Destroy a sandbox whose ``timeout_secs`` ran out, unless it changed meanwhile."""
        async with self._lock(rec.id):
            current = self.store.get(rec.id)
            if current is None or current.status != Status.RUNNING:
                return None
            await self._run_hooks(self.before_terminate, current)
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
                    raise SandboxPending(rec.id)
                await asyncio.sleep(0.05)
        fresh = self.store.get(rec.id)
        if fresh is None:
            raise SandboxNotFound(rec.id)
        return fresh, True

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Wait (bounded) for creates in flight; reconcile handles any left over."""
        pending = list(self._creating.values()) + self._background.pending()
        if pending:
            log.info("waiting for %d create(s) in flight", len(pending))
            await asyncio.wait(pending, timeout=STOP_WAIT)
        for hook in self.on_close:
            await hook()

    @asynccontextmanager
    async def _lock(self, sandbox_id: str) -> AsyncIterator[None]:
        async with self._locks.get(sandbox_id):
            yield

    def _fresh(self, rec: SandboxRecord) -> SandboxRecord:
        return self.store.get(rec.id) or rec


def _name_taken(name: str) -> Conflict:
    return NameTaken(name)


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


def _parse_or_none(raw: bytes) -> Any:
    try:
        return agent_client.parse_json(raw)
    except agent_client.AgentError:
        return None


