"""The control plane's side of the wider API: snapshots, create from a snapshot,
copies, network policy, images. Each mutation is one more command kind through the
same outbox (one open command per sandbox, generation, fencing); reads are the
catalog's rows.

Snapshots live where suspend images do: the artifact (``btrfs send`` stream + CRIU
images, HMAC-signed) in object storage, a catalog row in ``snapshots`` naming who
caches it and, for a memory snapshot, the fingerprint a restoring node must match.
A create from a snapshot is placed on a node that caches it if one fits, else on any
node that fits (every node can fetch and verify the artifact).
"""

from __future__ import annotations

import asyncio
import json

import pydantic
from typing import Any, Protocol

from .. import ids
from ..api.models import UpdateSandboxRequest
from ..errors import (CellboxError, InvalidRequest, NotSupported, QuotaExceeded, SandboxNotRunning,
                      SnapshotNotFound)
from . import nodes, outbox, placement, quota
from .db import Db
from .records import ClusterSandbox, Command


class ControlPlane(Protocol):
    """What these functions use of ``control.ControlPlane`` (typed here, not imported:
    control.py calls into this module)."""

    db: Db

    async def _wait(self, cmd: Command) -> Command: ...

KINDS = ("memory", "filesystem")
MAX_COPIES = 16


def validated(model: Any, body: dict[str, Any]) -> Any:
    """``model`` from a request body; a 400 naming the first bad field (never a 500)."""
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(f"{where}: {first.get('msg', 'invalid')}") from None


def snapshot_wire(row: dict[str, Any]) -> dict[str, Any]:
    """SnapshotInfo's fields the catalog has (the single-host shape's names)."""
    return {"snapshot_id": row["id"], "id": row["id"], "namespace": row["project"], "sandbox_id": row["sandbox_id"],
            "snapshot_type": row["kind"], "status": "completed", "size_bytes": row["size_bytes"],
            "created_at": int(row["created_at"].timestamp() * 1000), "cached_on": list(row["cached_on"])}


async def images(cp: ControlPlane) -> list[dict[str, Any]]:
    """Every image some live node holds, with the nodes that hold it."""
    held: dict[str, list[str]] = {}
    for node in await nodes.list_nodes(cp.db):
        if node.alive and node.state != "dead":
            for name in node.images:
                held.setdefault(name, []).append(node.id)
    return [{"name": name, "nodes": held[name]} for name in sorted(held)]


async def snapshot(cp: ControlPlane, project: str, ref: str, kind: str, *, listed: bool = True) -> dict[str, Any]:
    """Snapshot a running sandbox on its node, upload it, catalog it."""
    if kind not in KINDS:
        raise InvalidRequest(f"snapshot_type must be one of {', '.join(KINDS)}")
    sb = await outbox.get_sandbox(cp.db, ref, project)
    if sb.state != "running":
        raise SandboxNotRunning(sb.id, sb.state)
    sid = ids.new_id()
    payload = {"project": project, "local_id": sb.local_id, "kind": kind, "snapshot_id": sid, "listed": listed}
    # A client's snapshot counts against the project's snapshot quotas (the platform's
    # own, a copy's, do not): checked in the transaction that queues the command.
    admit = (lambda cur: quota.admit_snapshot(cur, project)) if listed else None
    cmd = await outbox.submit(cp.db, sb.id, project, "snapshot", sb.desired_state, payload, admit=admit)
    done = await cp._wait(cmd)
    result = done.result or {}
    async with cp.db.tx() as cur:
        await cur.execute(
            """INSERT INTO snapshots (id, project, sandbox_id, kind, artifact, checksum, size_bytes, image,
                                      fingerprint, cached_on, listed)
               SELECT %s, %s, %s, %s, %s, %s, %s, %s, n.fingerprint, ARRAY[n.id], %s FROM nodes n WHERE n.id = %s
               RETURNING *""",
            (sid, project, sb.id, kind, result["artifact"], result["artifact"], int(result.get("size_bytes") or 0),
             sb.image, listed, done.node_id))
        row = dict(await cur.fetchone())
        if listed and (refusal := await quota.snapshot_bytes_over(cur, project)) is not None:
            raise QuotaExceeded(refusal)  # the row's insert is rolled back with the transaction
        return row


async def get_snapshot(cp: ControlPlane, project: str, sid: str) -> dict[str, Any]:
    async with cp.db.tx() as cur:
        await cur.execute("SELECT * FROM snapshots WHERE id = %s AND project = %s AND listed", (sid, project))
        row = await cur.fetchone()
    if row is None:  # another project's snapshot is a 404 too
        raise SnapshotNotFound(sid)
    return dict(row)


async def list_snapshots(cp: ControlPlane, project: str, sandbox: str | None = None) -> list[dict[str, Any]]:
    async with cp.db.tx() as cur:
        if sandbox is None:
            await cur.execute("SELECT * FROM snapshots WHERE project = %s AND listed ORDER BY created_at DESC "
                              "LIMIT 1000", (project,))
        else:
            await cur.execute("SELECT * FROM snapshots WHERE project = %s AND sandbox_id = %s AND listed "
                              "ORDER BY created_at DESC LIMIT 1000", (project, sandbox))
        return [dict(r) for r in await cur.fetchall()]


async def delete_snapshot(cp: ControlPlane, project: str, sid: str) -> None:
    """The catalog row goes: no new sandbox can be made from it. Its artifact stays in
    object storage and in the nodes' caches (no garbage collection yet: docs/cluster.md)."""
    async with cp.db.tx() as cur:
        await cur.execute("DELETE FROM snapshots WHERE id = %s AND project = %s AND listed RETURNING id",
                          (sid, project))
        if await cur.fetchone() is None:
            raise SnapshotNotFound(sid)


async def create_from_snapshot(cp: ControlPlane, project: str, spec: dict[str, Any], *,
                               row: dict[str, Any] | None = None) -> ClusterSandbox:
    """A new sandbox restored from a catalogued snapshot (its memory too, for a memory one)."""
    if row is None:
        row = await get_snapshot(cp, project, spec["snapshot_id"])
    if spec.get("image"):
        raise InvalidRequest("image and snapshot_id exclude each other: the snapshot has its image")
    memory = spec.get("memory_mb", 1024)
    want = placement.Want(memory_mb=memory, fingerprint=dict(row["fingerprint"]) if row["kind"] == "memory" else None,
                          cached_on=tuple(row["cached_on"]))
    node = placement.place(await nodes.list_nodes(cp.db), want)
    sid = ids.new_id()
    payload = {**{k: v for k, v in spec.items() if k != "snapshot_id"}, "project": project,
               "snapshot_artifact": row["artifact"]}
    cmd = await outbox.create(cp.db, sid, project, spec.get("name"), node.id, row["image"], memory, payload)
    try:
        await cp._wait(cmd)
    except CellboxError:
        pass  # as a cold create: a failure on the node is a `failed` record with its reason
    after = await outbox.get_sandbox(cp.db, sid, project)
    if after.state == "running":
        async with cp.db.tx() as cur:  # that node caches the artifact now
            await cur.execute("UPDATE snapshots SET cached_on = array_append(cached_on, %s) "
                              "WHERE id = %s AND NOT %s = ANY(cached_on)", (node.id, row["id"], node.id))
    return after


async def copy(cp: ControlPlane, project: str, ref: str, times: int) -> tuple[ClusterSandbox, list[Any]]:
    """``times`` live copies (files and memory): one memory snapshot (not listed), then
    that many creates from it, placed independently. Failures are returned in place."""
    if not 1 <= times <= MAX_COPIES:
        raise InvalidRequest(f"times must be between 1 and {MAX_COPIES}")
    source = await outbox.get_sandbox(cp.db, ref, project)
    row = await snapshot(cp, project, source.id, "memory", listed=False)
    spec = {"memory_mb": source.memory_mb}
    made = await asyncio.gather(*[create_from_snapshot(cp, project, spec, row=row) for _ in range(times)],
                                return_exceptions=True)
    out: list[Any] = []
    for m in made:
        if isinstance(m, BaseException) and not isinstance(m, CellboxError):
            raise m
        out.append(m)
    return source, out


async def update(cp: ControlPlane, project: str, ref: str, body: dict[str, Any]) -> ClusterSandbox:
    """PATCH: the network policy (replaced atomically on the node); other fields are a
    400 naming them (not served in cluster mode yet)."""
    if other := sorted(set(body) - {"network"}):
        raise NotSupported(f"PATCH of {', '.join(other)} is not served in cluster mode yet (only network)")
    checked = validated(UpdateSandboxRequest, body)
    checked.to_changes()  # a bad policy is a 400 here, before a command
    network = checked.network.model_dump() if checked.network is not None else None  # as validated
    sb = await outbox.get_sandbox(cp.db, ref, project)
    if sb.state != "running":
        raise SandboxNotRunning(sb.id, sb.state)
    payload = {"project": project, "local_id": sb.local_id, "network": network}
    cmd = await outbox.submit(cp.db, sb.id, project, "policy", sb.desired_state, payload)
    await cp._wait(cmd)
    async with cp.db.tx() as cur:
        await cur.execute("UPDATE sandboxes SET spec = spec || jsonb_build_object('network', %s::jsonb) "
                          "WHERE id = %s", (json.dumps(network), sb.id))
    return await outbox.get_sandbox(cp.db, sb.id, project)
