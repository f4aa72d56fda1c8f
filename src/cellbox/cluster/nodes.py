"""The node registry: register, heartbeat (the lease), and reaping nodes that stopped.

Fencing: the lease is kept by the database's clock (``now()``), the one every party
shares. Each registration bumps the node's ``epoch``; a heartbeat renews only the
lease of the epoch it names, and only while that lease still holds. A node whose
lease lapsed (stalled, partitioned, SIGSTOPped) finds its heartbeat refused and must
stop acting: the reaper may already have failed or moved its sandboxes. The node also
keeps a local deadline (``Lease.local_deadline``) from when it *sent* the renewal, so
it stops acting before the database would refuse it, even while cut off.
"""

from __future__ import annotations

import json
import time

from .db import Db
from .records import Lease, NodeInfo, NodeRow

# A lease this long (seconds), renewed every third of it; the reaper fails a node
# whose lease lapsed, so node death is noticed within one lease plus a sweep.
LEASE_S = 6.0
# The node stops acting this much before its local view of the lease ends: slack for
# the round trip that renewed it.
FENCE_MARGIN_S = 1.0
NODE_LOST = "node_lost"


class Fenced(Exception):
    """This node's lease lapsed: it must not act until it registers again."""


async def register(db: Db, node: NodeInfo, lease_s: float = LEASE_S) -> Lease:
    """Join (or rejoin) the cluster under a new epoch: results of the old one are refused."""
    sent = time.monotonic()
    async with db.tx() as cur:
        await cur.execute(
            """INSERT INTO nodes (id, address, capacity_sandboxes, capacity_mem_mb, labels, fingerprint, images,
                                  lease_until)
               VALUES (%s, %s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))
               ON CONFLICT (id) DO UPDATE SET
                   address = EXCLUDED.address, capacity_sandboxes = EXCLUDED.capacity_sandboxes,
                   capacity_mem_mb = EXCLUDED.capacity_mem_mb, labels = EXCLUDED.labels,
                   fingerprint = EXCLUDED.fingerprint, images = EXCLUDED.images, state = 'alive',
                   epoch = nodes.epoch + 1, lease_until = EXCLUDED.lease_until, heartbeat_at = now(),
                   registered_at = now()
               RETURNING epoch""",
            (node.id, node.address, node.capacity_sandboxes, node.capacity_mem_mb, json.dumps(node.labels),
             json.dumps(node.fingerprint), list(node.images), lease_s))
        row = await cur.fetchone()
    return Lease(node.id, row["epoch"], sent + lease_s - FENCE_MARGIN_S)


async def heartbeat(db: Db, lease: Lease, lease_s: float = LEASE_S, images: tuple[str, ...] | None = None) -> Lease:
    """Renew the lease of this epoch; ``Fenced`` if it already lapsed or was superseded."""
    sent = time.monotonic()
    async with db.tx() as cur:
        await cur.execute(
            """UPDATE nodes SET lease_until = now() + make_interval(secs => %s), heartbeat_at = now(),
                                images = COALESCE(%s, images)
               WHERE id = %s AND epoch = %s AND state <> 'dead' AND lease_until > now()
               RETURNING epoch""",
            (lease_s, list(images) if images is not None else None, lease.node_id, lease.epoch))
        row = await cur.fetchone()
    if row is None:
        raise Fenced(f"node {lease.node_id}: lease of epoch {lease.epoch} lapsed")
    return Lease(lease.node_id, lease.epoch, sent + lease_s - FENCE_MARGIN_S)


def check(lease: Lease) -> None:
    """Refuse to act past the local deadline (the node side of fencing)."""
    if time.monotonic() >= lease.local_deadline:
        raise Fenced(f"node {lease.node_id}: local lease deadline passed")


async def reap(db: Db) -> list[str]:
    """Mark nodes whose lease lapsed dead and settle what they held, in one transaction.

    Ephemeral sandboxes (no name) are ``failed`` with the reason; named ones fall back
    to their last suspend image (``suspended``, no node: resumable anywhere) or fail
    if they never had one; their unfinished commands fail. ``SKIP LOCKED``: any number
    of control-plane replicas may sweep at once, each node is settled once.
    """
    async with db.tx() as cur:
        await cur.execute(
            """UPDATE nodes SET state = 'dead' WHERE id IN (
                   SELECT id FROM nodes WHERE state <> 'dead' AND lease_until < now() FOR UPDATE SKIP LOCKED)
               RETURNING id""")
        dead = [r["id"] for r in await cur.fetchall()]
        if not dead:
            return []
        await cur.execute(
            """UPDATE commands SET state = 'failed', error = %s, finished_at = now()
               WHERE node_id = ANY(%s) AND state IN ('queued', 'claimed')""",
            (f"{NODE_LOST}: the node stopped renewing its lease", dead))
        await cur.execute(
            """UPDATE sandboxes SET
                   state = CASE WHEN name IS NOT NULL AND snapshot_id IS NOT NULL THEN 'suspended' ELSE 'failed' END,
                   desired_state = CASE WHEN name IS NOT NULL AND snapshot_id IS NOT NULL THEN 'suspended'
                                        ELSE 'failed' END,
                   reason = CASE WHEN name IS NOT NULL AND snapshot_id IS NOT NULL
                                 THEN %s || ': resumable from its last suspend image'
                                 ELSE %s || ': node ' || node_id || ' stopped renewing its lease' END,
                   node_id = NULL, local_id = NULL, generation = generation + 1, updated_at = now()
               WHERE node_id = ANY(%s) AND state NOT IN ('terminated', 'failed')""",
            (NODE_LOST, NODE_LOST, dead))
    return dead


async def list_nodes(db: Db) -> list[NodeRow]:
    """Every node with its load (what placement filters and ranks on)."""
    async with db.tx() as cur:
        await cur.execute(
            """SELECT n.*, n.lease_until > now() AS alive,
                      count(s.id) AS sandboxes, COALESCE(sum(s.memory_mb), 0) AS mem_mb
               FROM nodes n LEFT JOIN sandboxes s ON s.node_id = n.id AND s.state NOT IN ('terminated', 'failed')
               GROUP BY n.id ORDER BY n.id""")
        rows = await cur.fetchall()
    return [NodeRow(r["id"], r["address"], r["capacity_sandboxes"], r["capacity_mem_mb"], r["labels"],
                    r["fingerprint"], tuple(r["images"]), r["state"], r["epoch"], r["alive"],
                    int(r["sandboxes"]), int(r["mem_mb"])) for r in rows]
