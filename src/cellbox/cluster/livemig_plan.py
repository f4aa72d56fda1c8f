"""Live migration, the control plane's part: pick the target, queue one command.

A migration is a command like any other (the outbox's one-open-command rule, the
sandbox's generation, fencing): it goes to the sandbox's current node, which drives
the transfer to the target over the node-to-node migration port (livemigrate.py,
migrate_in.py). The target takes ownership only in the transaction that finishes that
command, after its restore answered (outbox.finish with ``node_id``); until then the
cluster's truth is the source, which keeps running if anything fails.
"""

from __future__ import annotations

from typing import Any

from .. import ids
from ..errors import Conflict, InvalidRequest, NotFound
from . import nodes, outbox, placement
from .records import ClusterSandbox, NodeRow


def pick_target(rows: list[NodeRow], source: NodeRow, memory_mb: int, to: str | None) -> NodeRow:
    """A node other than ``source`` with room and the same kernel, CPU flags and CRIU
    (a memory image restores only there); ``to`` must pass the same filter."""
    want = placement.Want(memory_mb=memory_mb, fingerprint=source.fingerprint, exclude=(source.id,))
    if to is None:
        return placement.place(rows, want)
    if to == source.id:
        raise InvalidRequest(f"the sandbox already runs on {to}", code="SAME_NODE")
    target = next((n for n in rows if n.id == to), None)
    if target is None:
        raise NotFound(f"node {to!r} not found", code="NODE_NOT_FOUND")
    if (why := placement.why_not(target, want)) is not None:
        raise Conflict(f"node {to} cannot take this sandbox: {why}", code="NO_NODE")
    return target


async def migrate(control: Any, project: str | None, ref: str, to: str | None) -> ClusterSandbox:
    """``control``: the ControlPlane (its database and its wait for a command's end)."""
    if to is not None and (not isinstance(to, str) or not 0 < len(to) <= 128):
        raise InvalidRequest("to: a node ID")
    sb = await outbox.get_sandbox(control.db, ref, project)
    if sb.state != "running" or sb.node_id is None:
        raise Conflict(f"sandbox {sb.id} is {sb.state}; only a running sandbox migrates", code="INVALID_STATE")
    rows = await nodes.list_nodes(control.db)
    source = next(n for n in rows if n.id == sb.node_id)
    target = pick_target(rows, source, sb.memory_mb, to)
    payload = {"project": sb.project, "local_id": sb.local_id, "name": sb.name, "snapshot": sb.snapshot_id,
               "migration": ids.new_id(), "target_node": target.id, "target_address": target.address}
    cmd = await outbox.submit(control.db, sb.id, sb.project, "migrate", "running", payload)
    await control._wait(cmd)
    return await outbox.get_sandbox(control.db, sb.id, sb.project)
