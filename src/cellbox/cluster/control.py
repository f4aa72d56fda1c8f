"""The control plane: stateless, any number of replicas on one PostgreSQL.

A mutation writes the desired state and a command for the sandbox's node in one
transaction, then waits for that command to finish (woken by NOTIFY on
``cellbox_done``, polling as the fallback). Nothing lives only in a replica's memory:
killing one loses at most the wait of the requests it was serving; the command goes
on and the client's retry sees its result. Each replica also sweeps for nodes whose
lease lapsed (nodes.reap: SKIP LOCKED, so sweeps of several replicas never collide).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg

from .. import ids
from ..errors import CellboxError, Conflict, InternalFailure, InvalidRequest, NotFound
from ..images import refs
from . import nodes, outbox, placement, quota
from .db import Db
from .records import ClusterSandbox, Command

log = logging.getLogger(__name__)
WAIT_S = 300.0  # a create's budget: image unpacking on a cold node takes its time
SWEEP_S = 1.0


class ControlPlane:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.db = Db(dsn)
        self.sweep_db = Db(dsn)
        self._done: dict[int, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # The proxy's route cache: sandbox ID -> (node address, state); an entry is
        # dropped on NOTIFY cellbox_route (its node or state changed), so a stale route
        # lives at most until the notification arrives; a miss reads the database.
        self.routes: dict[str, tuple[str, str]] = {}

    async def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._sweep())]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.db.close()
        await self.sweep_db.close()

    # -- lifecycle ---------------------------------------------------------------------

    async def create(self, project: str, spec: dict[str, Any]) -> ClusterSandbox:
        spec = _check_spec(spec)
        async with self.db.tx() as cur:  # over quota says so before "no node"; outbox.create checks again
            await quota.admit(cur, project, spec)
        if spec.get("snapshot_id"):
            from . import control_wide  # restore from a catalogued snapshot
            return await control_wide.create_from_snapshot(self, project, spec)
        image = refs.canonical(spec["image"], field="image") if spec.get("image") else None
        node = placement.place(await nodes.list_nodes(self.db),
                               placement.Want(memory_mb=spec.get("memory_mb", 1024), image=image))
        sid = ids.new_id()
        cmd = await outbox.create(self.db, sid, project, spec.get("name"), node.id, image,
                                  spec.get("memory_mb", 1024), {**spec, "project": project})
        try:
            await self._wait(cmd)
        except InternalFailure:
            pass  # as on one host: a create that failed on the node is a `failed` record with its reason
        return await outbox.get_sandbox(self.db, sid, project)

    async def get(self, project: str, ref: str) -> ClusterSandbox:
        return await outbox.get_sandbox(self.db, ref, project)

    async def list(self, project: str, limit: int = 100) -> list[ClusterSandbox]:
        async with self.db.tx() as cur:
            await cur.execute("SELECT * FROM sandboxes WHERE project = %s ORDER BY created_at DESC, id DESC "
                              "LIMIT %s", (project, min(max(limit, 1), 1000)))
            return [outbox.sandbox_row(r) for r in await cur.fetchall()]

    async def delete(self, project: str, ref: str) -> ClusterSandbox:
        sb = await outbox.get_sandbox(self.db, ref, project)
        if sb.state in ("terminated", "failed"):
            return sb  # DELETE is idempotent
        if sb.node_id is None:  # suspended, its node lost: nothing runs anywhere
            return await outbox.terminate_unplaced(self.db, sb)
        return await self._mutate(sb, "destroy", "terminated")

    async def suspend(self, project: str, ref: str) -> ClusterSandbox:
        sb = await outbox.get_sandbox(self.db, ref, project)
        if not sb.name:
            raise InvalidRequest("only named sandboxes can be suspended (ephemeral ones are terminated)",
                                 code="SANDBOX_NOT_NAMED")
        if sb.state == "suspended":
            return sb  # as on one host: suspending a suspended sandbox changes nothing
        return await self._mutate(sb, "suspend", "suspended")

    async def resume(self, project: str, ref: str) -> ClusterSandbox:
        """On the node that holds its suspend image if it is alive (no download), else
        on any node whose CPU, kernel and CRIU match the image's."""
        sb = await outbox.get_sandbox(self.db, ref, project)
        if sb.state != "suspended":
            raise InvalidRequest(f"sandbox {sb.id} is {sb.state}, not suspended", code="INVALID_STATE")
        if sb.snapshot_id is None:  # suspended in place (no object store): only its node resumes it
            if sb.node_id is None:
                raise Conflict(f"sandbox {sb.id} lost its node and has no suspend image in object storage",
                               code="NOT_PLACED")
            return await self._mutate(sb, "resume", "running")
        snap = await self._snapshot_row(sb.snapshot_id)
        want = placement.Want(memory_mb=sb.memory_mb, fingerprint=snap["fingerprint"],
                              cached_on=tuple(snap["cached_on"]))
        node = placement.place(await nodes.list_nodes(self.db), want)
        return await self._mutate(sb, "resume", "running", node_id=node.id)

    async def _snapshot_row(self, digest: str) -> dict[str, Any]:
        async with self.db.tx() as cur:
            await cur.execute("SELECT * FROM snapshots WHERE id = %s", (digest,))
            row = await cur.fetchone()
        if row is None:
            raise Conflict(f"suspend image {digest[:12]} is not in the catalog", code="NO_SNAPSHOT")
        return row

    async def _record_snapshot(self, sb: ClusterSandbox, node_id: str) -> None:
        """The catalog row of a suspend image: where it is, what it needs, who caches it."""
        async with self.db.tx() as cur:
            await cur.execute(
                """INSERT INTO snapshots (id, project, sandbox_id, kind, artifact, checksum, fingerprint, cached_on)
                   SELECT %s, %s, %s, 'memory', %s, %s, n.fingerprint, ARRAY[n.id] FROM nodes n WHERE n.id = %s
                   ON CONFLICT (id) DO NOTHING""",
                (sb.snapshot_id, sb.project, sb.id, sb.snapshot_id, sb.snapshot_id, node_id))

    async def drain(self, node_id: str, *, undo: bool = False) -> dict[str, list[str]]:
        """Take no new sandboxes on ``node_id`` and move its running named ones away
        (suspend to object storage, resume elsewhere: placement filters a draining
        node). Ephemeral sandboxes cannot be suspended, so they stay to their end;
        live migration would move them too. ``undo`` takes the node back."""
        async with self.db.tx() as cur:
            await cur.execute("UPDATE nodes SET state = %s WHERE id = %s AND state <> 'dead' RETURNING id",
                              ("alive" if undo else "draining", node_id))
            if await cur.fetchone() is None:
                raise NotFound(f"node {node_id!r} not found or dead", code="NODE_NOT_FOUND")
        moved: list[str] = []
        left: list[str] = []
        if undo:
            return {"moved": moved, "left": left}
        for sb in await outbox.sandboxes_on(self.db, node_id):
            if sb.state != "running":
                continue  # suspended ones are in object storage already: they resume elsewhere
            if not sb.name:
                left.append(sb.id)
                continue
            await self.suspend(sb.project, sb.id)
            after = await self.resume(sb.project, sb.id)
            moved.append(f"{sb.id} -> {after.node_id}")
        return {"moved": moved, "left": left}

    async def _mutate(self, sb: ClusterSandbox, kind: str, desired: str, node_id: str | None = None
                      ) -> ClusterSandbox:
        payload = {"project": sb.project, "local_id": sb.local_id, "name": sb.name, "snapshot": sb.snapshot_id}
        cmd = await outbox.submit(self.db, sb.id, sb.project, kind, desired, payload, node_id=node_id)
        await self._wait(cmd)
        after = await outbox.get_sandbox(self.db, sb.id, sb.project)
        if kind == "suspend" and after.snapshot_id and after.snapshot_id != sb.snapshot_id:
            await self._record_snapshot(after, cmd.node_id)
        if kind == "resume" and sb.snapshot_id:  # the node imported it: one more cache
            async with self.db.tx() as cur:
                await cur.execute("UPDATE snapshots SET cached_on = array_append(cached_on, %s) "
                                  "WHERE id = %s AND NOT %s = ANY(cached_on)", (cmd.node_id, sb.snapshot_id, cmd.node_id))
        return after

    async def _wait(self, cmd: Command) -> Command:
        """Until the node finished ``cmd``; its error as a 500 naming the node's reason."""
        event = self._done.setdefault(cmd.id, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        try:
            while True:
                got = await outbox.get_command(self.db, cmd.id)
                if got.state == "done":
                    return got
                if got.state == "failed":
                    raise _failure(got)
                if loop.time() > deadline:
                    raise InternalFailure(f"command {cmd.id} ({cmd.kind}) not finished after {WAIT_S:g}s; "
                                          "it goes on: read the sandbox again later")
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), 1.0)  # NOTIFY wakes; the poll is the guarantee
        finally:
            self._done.pop(cmd.id, None)

    # -- routing (the proxy) ------------------------------------------------------------

    async def route(self, project: str | None, ref: str) -> tuple[ClusterSandbox, str | None]:
        sb = await outbox.get_sandbox(self.db, ref, project)
        if sb.node_id is None:
            return sb, None
        cached = self.routes.get(sb.id)
        if cached is None:
            async with self.db.tx() as cur:
                await cur.execute("SELECT address FROM nodes WHERE id = %s", (sb.node_id,))
                cached = ((await cur.fetchone())["address"], sb.state)
            self.routes[sb.id] = cached
        return sb, cached[0]

    # -- background ----------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute("LISTEN cellbox_done")
                    await conn.execute("LISTEN cellbox_route")
                    async for note in conn.notifies():
                        if note.channel == "cellbox_route":
                            self.routes.pop(note.payload, None)
                        elif (ev := self._done.get(int(note.payload))) is not None:
                            ev.set()
            except psycopg.Error:
                self.routes.clear()  # notifications may have been missed meanwhile
                await asyncio.sleep(1.0)

    async def _sweep(self) -> None:
        while True:
            try:
                if dead := await nodes.reap(self.sweep_db):
                    log.warning("nodes lost (lease lapsed): %s", ", ".join(dead))
            except psycopg.Error as exc:
                log.warning("sweep failed: %s", exc)
            await asyncio.sleep(SWEEP_S)


_TYPES = {"image": str, "name": str, "cpus": (int, float), "memory_mb": int, "disk_mb": int, "timeout_secs": int,
          "snapshot_id": str}


def _check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """400 for anything a create may not carry, before a row or a node is touched."""
    if unknown := sorted(set(spec) - set(_TYPES)):
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
    for key, typ in _TYPES.items():
        val = spec.get(key)
        if val is not None and (not isinstance(val, typ) or isinstance(val, bool)):
            raise InvalidRequest(f"{key}: wrong type")
    if spec.get("name") is not None and (problem := ids.name_problem(spec["name"])):
        raise InvalidRequest(f"name: {problem}", code="INVALID_NAME")
    mem = spec.get("memory_mb", 1024)
    if not 64 <= mem <= 65536:
        raise InvalidRequest("memory_mb must be between 64 and 65536")
    return {k: v for k, v in spec.items() if v is not None}


def _failure(cmd: Command) -> CellboxError:
    """The node's error with its status (a 4xx there is a 4xx here), or the node's loss."""
    text = cmd.error or "failed"
    if text.startswith(nodes.NODE_LOST):
        return Conflict(f"command {cmd.kind} of sandbox {cmd.sandbox_id}: {text}", code="NODE_LOST")
    status = (cmd.result or {}).get("status", 500)
    cls = {400: InvalidRequest, 404: NotFound, 409: Conflict}.get(status, InternalFailure)
    code, _, message = text.partition(": ")
    return cls(f"{cmd.kind} of sandbox {cmd.sandbox_id} on node {cmd.node_id}: {message or code}",
               code=code if message else None)
