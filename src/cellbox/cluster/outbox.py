"""The commands outbox: the control plane writes desired state and a command in one
transaction; the sandbox's node claims it, acts, and finishes it.

Every command carries the sandbox's generation, bumped when the command is written;
a result is applied to the sandbox only if the generation still matches (a command
the reaper overtook, or an older one, cannot overwrite newer state) and only from the
epoch that claimed it while that epoch's lease holds (fencing, ``nodes.py``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import psycopg.errors

from ..errors import Conflict, NotFound
from . import quota
from .db import Db
from .records import ClusterSandbox, Command, Lease

_CMD_COLS = "id, sandbox_id, node_id, kind, payload, generation, state, result, error"


def _command(r: dict[str, Any]) -> Command:
    return Command(r["id"], r["sandbox_id"], r["node_id"], r["kind"], r["payload"], r["generation"], r["state"],
                   r["result"], r["error"])


def sandbox_row(r: dict[str, Any]) -> ClusterSandbox:
    return ClusterSandbox(r["id"], r["project"], r["name"], r["node_id"], r["local_id"], r["state"],
                          r["desired_state"], r["generation"], r["image"], r["memory_mb"], r["reason"],
                          r["snapshot_id"], r["spec"])


async def create(db: Db, sandbox_id: str, project: str, name: str | None, node_id: str, image: str | None,
                 memory_mb: int, spec: dict[str, Any]) -> Command:
    """A new sandbox record (``pending``) and its create command, atomically, within the
    project's quotas (checked in the same transaction: ``quota.py``)."""
    try:
        async with db.tx() as cur:
            await quota.admit(cur, project, spec)
            await cur.execute(
                """INSERT INTO sandboxes (id, project, name, node_id, state, desired_state, image, memory_mb, spec)
                   VALUES (%s, %s, %s, %s, 'pending', 'running', %s, %s, %s)""",
                (sandbox_id, project, name, node_id, image, memory_mb, json.dumps(spec)))
            await cur.execute(
                f"""INSERT INTO commands (sandbox_id, node_id, kind, payload, generation)
                    VALUES (%s, %s, 'create', %s, 1) RETURNING {_CMD_COLS}""",
                (sandbox_id, node_id, json.dumps(spec)))
            return _command(await cur.fetchone())
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a sandbox named {name!r} already exists in this project", code="NAME_TAKEN") from None


async def submit(db: Db, sandbox_id: str, project: str, kind: str, desired: str,
                 payload: dict[str, Any] | None = None, node_id: str | None = None,
                 admit: Callable[[psycopg.AsyncCursor[Any]], Awaitable[None]] | None = None) -> Command:
    """Bump the sandbox's generation and queue ``kind`` for its node (or ``node_id``).

    409 if the sandbox already has an unfinished command: the partial unique index
    ``commands_one_open`` decides, so two replicas racing cannot both queue one.
    ``admit`` runs first in the same transaction (a quota check whose lock and count
    must cover the queued command: ``quota.admit_snapshot``); it raises to refuse.
    """
    try:
        async with db.tx() as cur:
            if admit is not None:
                await admit(cur)
            await cur.execute("SELECT * FROM sandboxes WHERE id = %s AND project = %s FOR UPDATE",
                              (sandbox_id, project))
            row = await cur.fetchone()
            if row is None:  # another project's sandbox is a 404, as on one host
                raise NotFound(f"sandbox {sandbox_id} not found")
            target = node_id or row["node_id"]
            if target is None:
                raise Conflict(f"sandbox {sandbox_id} is {row['state']} and on no node", code="NOT_PLACED")
            await cur.execute(
                """UPDATE sandboxes SET generation = generation + 1, desired_state = %s, node_id = %s,
                                        updated_at = now()
                   WHERE id = %s RETURNING generation""", (desired, target, sandbox_id))
            gen = (await cur.fetchone())["generation"]
            await cur.execute(
                f"""INSERT INTO commands (sandbox_id, node_id, kind, payload, generation)
                    VALUES (%s, %s, %s, %s, %s) RETURNING {_CMD_COLS}""",
                (sandbox_id, target, kind, json.dumps(payload or {}), gen))
            return _command(await cur.fetchone())
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"sandbox {sandbox_id} has a command in flight; retry when it finishes",
                       code="BUSY") from None


async def claim(db: Db, lease: Lease) -> Command | None:
    """Take this node's oldest queued command, if its lease holds (by the database's clock).

    ``FOR UPDATE SKIP LOCKED``: claimers never wait on each other's rows and never get
    the same one; the join on ``nodes`` is the fence (a lapsed epoch claims nothing).
    """
    async with db.tx() as cur:
        await cur.execute(
            f"""UPDATE commands SET state = 'claimed', claimed_epoch = %(epoch)s, claimed_at = now()
                WHERE id = (
                    SELECT c.id FROM commands c
                    JOIN nodes n ON n.id = c.node_id AND n.epoch = %(epoch)s AND n.lease_until > now()
                                    AND n.state <> 'dead'
                    WHERE c.node_id = %(node)s AND c.state = 'queued'
                    ORDER BY c.id LIMIT 1 FOR UPDATE OF c SKIP LOCKED)
                RETURNING {_CMD_COLS}""", {"epoch": lease.epoch, "node": lease.node_id})
        row = await cur.fetchone()
    return _command(row) if row else None


async def finish(db: Db, lease: Lease, cmd: Command, *, ok: bool, state: str | None = None,
                 local_id: str | None = None, snapshot_id: str | None = None, reason: str | None = None,
                 result: dict[str, Any] | None = None, error: str | None = None, node_id: str | None = None) -> bool:
    """Record the outcome; False (and nothing written) if this node was fenced meanwhile.

    The sandbox takes ``state`` only if its generation is still the command's;
    ``node_id`` moves it (a live migration's target takes ownership here, in the same
    transaction that finishes the source's command).
    """
    async with db.tx() as cur:
        await cur.execute(
            """UPDATE commands c SET state = %s, result = %s, error = %s, finished_at = now()
               FROM nodes n
               WHERE c.id = %s AND c.state = 'claimed' AND c.claimed_epoch = %s AND c.node_id = %s
                 AND n.id = c.node_id AND n.epoch = %s AND n.lease_until > now() AND n.state <> 'dead'
               RETURNING c.id""",
            ("done" if ok else "failed", json.dumps(result) if result is not None else None, error, cmd.id,
             lease.epoch, lease.node_id, lease.epoch))
        if await cur.fetchone() is None:
            return False
        if state is not None:
            await cur.execute(
                """UPDATE sandboxes SET state = %s, local_id = COALESCE(%s, local_id),
                                        snapshot_id = COALESCE(%s, snapshot_id), reason = %s, updated_at = now(),
                                        node_id = CASE WHEN %s = 'terminated' THEN NULL
                                                       ELSE COALESCE(%s, node_id) END
                   WHERE id = %s AND generation = %s""",
                (state, local_id, snapshot_id, reason, state, node_id, cmd.sandbox_id, cmd.generation))
    return True


async def get_command(db: Db, cmd_id: int) -> Command:
    async with db.tx() as cur:
        await cur.execute(f"SELECT {_CMD_COLS} FROM commands WHERE id = %s", (cmd_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"command {cmd_id} not found")
    return _command(row)


async def get_sandbox(db: Db, sandbox_id: str, project: str | None) -> ClusterSandbox:
    """By ID or name within ``project``; ``None`` (an admin key): by ID in any project."""
    async with db.tx() as cur:
        if project is None:
            await cur.execute("SELECT * FROM sandboxes WHERE id = %s", (sandbox_id,))
        else:
            await cur.execute("SELECT * FROM sandboxes WHERE project = %s AND (id = %s OR name = %s)",
                              (project, sandbox_id, sandbox_id))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"sandbox {sandbox_id} not found")
    return sandbox_row(row)


async def sandboxes_on(db: Db, node_id: str) -> list[ClusterSandbox]:
    """What the cluster believes runs on a node (its startup reconcile compares)."""
    async with db.tx() as cur:
        await cur.execute("SELECT * FROM sandboxes WHERE node_id = %s", (node_id,))
        return [sandbox_row(r) for r in await cur.fetchall()]


async def terminate_unplaced(db: Db, sb: ClusterSandbox) -> ClusterSandbox:
    """A sandbox on no node (suspended, its node lost) ends without a command."""
    async with db.tx() as cur:
        await cur.execute(
            """UPDATE sandboxes SET state = 'terminated', desired_state = 'terminated', reason = 'user_terminated',
                                    generation = generation + 1, updated_at = now()
               WHERE id = %s AND node_id IS NULL RETURNING *""", (sb.id,))
        row = await cur.fetchone()
    return sandbox_row(row) if row else await get_sandbox(db, sb.id, sb.project)
