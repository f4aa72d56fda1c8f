"""What a node does for each command, through the single-host service's public methods.

The node is today's single-host manager: the command names the sandbox by the ID
the control plane chose (the node creates under that ID, so the proxy's host names
work unchanged on both hops) and the project (the local namespace).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .. import ids
from ..errors import CellboxError, Conflict, InvalidRequest, NotFound
from ..manager.spec import CreateSpec
from ..manager.service import CreateOptions, SandboxService
from ..manager.snapshot_store import SnapshotType
from . import livemigrate, transfer
from .artifacts import ArtifactStore, Tampered
from .records import Command

# What a create's payload may carry, with its type: anything else is refused before
# the node touches runc (the control plane validates too; the node does not trust it).
_SPEC_FIELDS = {"image": str, "cpus": (int, float), "memory_mb": int, "disk_mb": int, "timeout_secs": int,
                "name": str}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    state: str | None
    reason: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    local_id: str | None = None
    snapshot_id: str | None = None
    node_id: str | None = None  # a migration: the sandbox's node from now on
    # Run by the node after the report, with whether the cluster accepted it (a
    # migration's source serves the rest of the pages, then drops its copy).
    after: Callable[[bool], Awaitable[None]] | None = None


def _spec(cmd: Command) -> CreateSpec:
    p = cmd.payload
    fields: dict[str, Any] = {}
    for key, typ in _SPEC_FIELDS.items():
        if p.get(key) is not None:
            if not isinstance(p[key], typ) or isinstance(p[key], bool):
                raise InvalidRequest(f"create payload: {key} has the wrong type")
            fields[key] = p[key]
    return CreateSpec(namespace=p["project"], sandbox_id=cmd.sandbox_id, **fields)


async def _create(service: SandboxService, cmd: Command) -> Outcome:
    rec = await service.create(CreateOptions(spec=_spec(cmd)), wait=True, budget=None)
    if rec.status.value != "running":
        why = rec.extra.get("error") or rec.termination_reason or rec.status.value
        return Outcome(False, "failed", reason=f"create failed on the node: {why}")
    return Outcome(True, "running", result={"ip": rec.ip}, local_id=rec.id)


async def _suspend_to_store(service: SandboxService, cmd: Command, local: str, store: ArtifactStore) -> Outcome:
    """Suspend as a memory snapshot in object storage, then drop the local sandbox: any
    compatible node can resume it (this one from its cache). The snapshot stays here as
    that cache."""
    project = cmd.payload["project"]
    snap = await service.snapshot(local, project, SnapshotType.MEMORY)
    digest, _ = await transfer.export_snapshot(service, snap, store)
    await service.delete(local, project, reason="suspended")
    return Outcome(True, "suspended", snapshot_id=digest, result={"local_snapshot": snap.id})


async def _resume_from_store(service: SandboxService, cmd: Command, store: ArtifactStore) -> Outcome:
    p = cmd.payload
    if not p.get("snapshot"):
        raise Conflict("no suspend image to resume from", code="NO_SNAPSHOT")
    snap = await transfer.import_snapshot(service, p["snapshot"], store)
    local = ids.new_id()  # a new local incarnation; the cluster ID stays the sandbox's
    spec = CreateSpec(namespace=p["project"], name=p.get("name"), sandbox_id=local)
    rec = await service.create(CreateOptions(spec=spec, snapshot_id=snap.id), wait=True, budget=None)
    if rec.status.value != "running":
        raise Conflict(f"restore failed: {rec.termination_reason or rec.status.value}", code="RESTORE_FAILED")
    return Outcome(True, "running", local_id=rec.id)


async def _migrate(service: SandboxService, cmd: Command, ctx: livemigrate.NodeCtx | None) -> Outcome:
    """Live migration off this node; a failure leaves the sandbox running here."""
    if ctx is None:
        return Outcome(False, "running", error="MIGRATION_FAILED: this node has no cluster key",
                       result={"status": 409})
    out = livemigrate.Outbound(service, cmd, ctx)
    try:
        local, after = await out.run()
    except Exception as exc:  # noqa: BLE001 - every failure: the source runs on, say why
        msg = exc.message if isinstance(exc, CellboxError) else f"{type(exc).__name__}: {exc}"
        return Outcome(False, "running", error=f"MIGRATION_FAILED: {msg}", result={"status": 409})
    return Outcome(True, "running", local_id=local, node_id=str(cmd.payload["target_node"]),
                   result={"timing": out.timing}, after=after)


# More command kinds (actions_wide.dispatch): an outcome, or None for "not mine".
More = Callable[[SandboxService, Command, "ArtifactStore | None"], Awaitable["Outcome | None"]]


async def _dispatch(service: SandboxService, cmd: Command, store: ArtifactStore | None,
                    more: More | None = None, ctx: livemigrate.NodeCtx | None = None) -> Outcome:
    if more is not None and (out := await more(service, cmd, store)) is not None:
        return out
    project = cmd.payload.get("project", "")
    local = cmd.payload.get("local_id") or cmd.sandbox_id  # the node's own ID for it
    if cmd.kind == "create":
        return await _create(service, cmd)
    if cmd.kind == "destroy":
        try:
            await service.delete(local, project)
        except NotFound:
            pass  # already gone here: the goal state holds
        return Outcome(True, "terminated", reason="user_terminated")
    if cmd.kind == "suspend":
        if store is not None:
            return await _suspend_to_store(service, cmd, local, store)
        rec, _ = await service.suspend(local, project, wait_s=None)
        return Outcome(True, rec.status.value)
    if cmd.kind == "resume":
        if store is not None:
            return await _resume_from_store(service, cmd, store)
        rec, _ = await service.resume(local, project, wait_s=None)
        return Outcome(True, rec.status.value)
    if cmd.kind == "migrate":
        return await _migrate(service, cmd, ctx)
    return Outcome(False, None, error=f"unknown command {cmd.kind!r}")


async def execute(service: SandboxService, cmd: Command, store: ArtifactStore | None = None,
                  more: More | None = None, migrate_ctx: livemigrate.NodeCtx | None = None) -> Outcome:
    """Run one command; every error becomes an outcome (the node loop never dies of one).
    ``migrate_ctx``: the cluster key and this node's data-path address (live migration)."""
    try:
        return await _dispatch(service, cmd, store, more, migrate_ctx)
    except Tampered as exc:  # never restore it: report, loudly
        return Outcome(False, None, error=f"ARTIFACT_TAMPERED: {exc}", result={"status": 409})
    except CellboxError as exc:
        # The sandbox's state did not change (the service cleans up a failed create):
        # a create's failure fails the sandbox, any other leaves its state as it is.
        state = "failed" if cmd.kind == "create" else None
        return Outcome(False, state, reason=exc.message if state else None, error=f"{exc.code}: {exc.message}",
                       result={"status": exc.status})
