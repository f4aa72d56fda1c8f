"""What a node does for the wider API's commands: snapshot (and upload), create from
a snapshot artifact (download, verify, restore), replace the network policy.

Through the single-host service's public methods, as ``actions.py``; every payload
field is checked here again (the node does not trust the control plane's validation).
"""

from __future__ import annotations

from typing import Any

from ..api.models import UpdateSandboxRequest
from ..errors import Conflict, InvalidRequest
from ..manager.service import CreateOptions, SandboxService
from ..manager.snapshot_store import SnapshotType
from . import transfer
from .actions import Outcome, _spec
from .artifacts import ArtifactStore
from .control_wide import validated
from .records import Command

KINDS = ("snapshot", "policy")


def handles(cmd: Command) -> bool:
    return cmd.kind in KINDS or (cmd.kind == "create" and bool(cmd.payload.get("snapshot_artifact")))


def _store(store: ArtifactStore | None) -> ArtifactStore:
    if store is None:
        raise Conflict("this node has no object storage (--s3-endpoint): snapshots cannot leave it",
                       code="NO_OBJECT_STORE")
    return store


def _str(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{key}: missing or not a string")
    return value


async def _snapshot(service: SandboxService, cmd: Command, local: str, store: ArtifactStore | None) -> Outcome:
    kind = cmd.payload.get("kind")
    if kind not in ("memory", "filesystem"):
        raise InvalidRequest("kind must be memory or filesystem")
    artifacts = _store(store)
    snap = await service.snapshot(local, _str(cmd.payload, "project"), SnapshotType(kind))
    digest, size = await transfer.export_snapshot(service, snap, artifacts)
    return Outcome(True, None, result={"artifact": digest, "local_snapshot": snap.id, "size_bytes": size})


async def _restore(service: SandboxService, cmd: Command, store: ArtifactStore | None) -> Outcome:
    snap = await transfer.import_snapshot(service, _str(cmd.payload, "snapshot_artifact"), _store(store))
    rec = await service.create(CreateOptions(spec=_spec(cmd), snapshot_id=snap.id), wait=True, budget=None)
    if rec.status.value != "running":
        why = rec.extra.get("error") or rec.termination_reason or rec.status.value
        return Outcome(False, "failed", reason=f"restore failed on the node: {why}")
    return Outcome(True, "running", result={"ip": rec.ip}, local_id=rec.id)


async def _policy(service: SandboxService, cmd: Command, local: str) -> Outcome:
    network = cmd.payload.get("network")
    changes = validated(UpdateSandboxRequest, {"network": network}).to_changes()
    rec = await service.update(local, _str(cmd.payload, "project"), changes)
    return Outcome(True, None, result={"network": rec.extra.get("network_policy")})


async def dispatch(service: SandboxService, cmd: Command, store: ArtifactStore | None) -> Outcome | None:
    """The outcome of a command of this module's kinds; None for any other (actions.py's)."""
    if not handles(cmd):
        return None
    local = cmd.payload.get("local_id") or cmd.sandbox_id
    if cmd.kind == "create":
        return await _restore(service, cmd, store)
    if cmd.kind == "snapshot":
        return await _snapshot(service, cmd, local, store)
    return await _policy(service, cmd, local)
