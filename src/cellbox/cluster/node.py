"""The node's pull loop: register, keep the lease, claim commands, act, report.

It only ever connects out (to PostgreSQL): the control plane never calls a node,
except the data path its proxy uses. LISTEN/NOTIFY wakes the claim loop early; a
poll every ``poll_s`` is what guarantees progress (a lost notification, a reconnect).
Heartbeats use their own connection so a slow command report cannot starve them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

import psycopg

from ..manager.service import SandboxService
from ..proxy.inflight import InFlight
from . import actions, actions_wide, livemigrate, nodes, outbox
from .artifacts import ArtifactStore
from .db import Db
from .records import Command, Lease, NodeInfo

log = logging.getLogger(__name__)
POLL_S = 2.0
# Commands run side by side, up to this many (each for another sandbox: the outbox
# allows one open command per sandbox). One at a time made a node's creates queue
# behind each other's boots.
IN_FLIGHT = 4


class NodeAgent:
    def __init__(self, dsn: str, info: NodeInfo, service: SandboxService, *, lease_s: float = nodes.LEASE_S,
                 poll_s: float = POLL_S, artifacts: ArtifactStore | None = None, key: bytes | None = None,
                 inflight: InFlight | None = None) -> None:
        self.dsn = dsn
        self.info = info
        self.service = service
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.artifacts = artifacts  # None: suspend stays local, resume only here
        self.key = key  # the cluster key: live migration's node-to-node credentials
        self.inflight = inflight  # the node proxy's open requests (a migration drains them)
        self.db = Db(dsn)  # claims and reports
        self.hb_db = Db(dsn)  # heartbeats only
        self.lease: Lease | None = None
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():  # the database may come up after us (or restart)
            try:
                await self._join()
                break
            except psycopg.Error as exc:
                log.warning("cannot join the cluster yet: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        if stop.is_set():
            return
        tasks = [asyncio.ensure_future(self._heartbeats(stop)), asyncio.ensure_future(self._listen(stop))]
        try:
            await self._claims(stop)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.db.close()
            await self.hb_db.close()

    async def _join(self) -> None:
        """Register under a new epoch, then drop local sandboxes the cluster moved away."""
        self.lease = await nodes.register(self.hb_db, self.info, self.lease_s)
        log.info("node %s joined, epoch %d", self.info.id, self.lease.epoch)
        await self._reconcile()

    async def _reconcile(self) -> None:
        """A sandbox running here that the cluster no longer places here (the reaper
        failed or moved it while this node was cut off) is destroyed: two live copies
        of one named sandbox would be worse than none."""
        ours = {s.local_id or s.id for s in await outbox.sandboxes_on(self.db, self.info.id)}
        for rec in self.service.store.list(live_only=True):
            if rec.id not in ours and not rec.namespace.startswith("__"):  # "__warm" & co are the node's own
                log.warning("sandbox %s is no longer this node's: destroying the local copy", rec.id)
                with contextlib.suppress(Exception):
                    await self.service.delete(rec.id, rec.namespace, reason="moved")

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lease_s / 3)
            if stop.is_set():
                return
            assert self.lease is not None
            try:
                self.lease = await nodes.heartbeat(self.hb_db, self.lease, self.lease_s)
            except nodes.Fenced as exc:
                log.warning("%s: rejoining", exc)
                with contextlib.suppress(psycopg.Error):
                    await self._join()
            except psycopg.Error as exc:  # the local deadline fences us if this lasts
                log.warning("heartbeat failed: %s", exc)

    async def _listen(self, stop: asyncio.Event) -> None:
        channel = "cellbox_node_" + hashlib.md5(self.info.id.encode()).hexdigest()
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f'LISTEN "{channel}"')
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error:
                await asyncio.sleep(1.0)  # the poll keeps us going meanwhile

    async def _claims(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self._slots.acquire()
                cmd = await self._claim()
                if cmd is None:
                    self._slots.release()
                    await self._idle(stop)
                    continue
                task = asyncio.ensure_future(self._run(cmd))
                self._running.add(task)
                task.add_done_callback(self._done)
        finally:  # commands in flight finish (a create cut half-way would leave parts)
            if self._running:
                await asyncio.wait(set(self._running))

    def _done(self, task: "asyncio.Task[None]") -> None:
        self._running.discard(task)
        self._slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("command failed unexpectedly", exc_info=exc)

    async def _claim(self) -> Command | None:
        try:
            assert self.lease is not None
            nodes.check(self.lease)
            return await outbox.claim(self.db, self.lease)
        except nodes.Fenced:
            return None  # the heartbeat loop rejoins
        except psycopg.Error as exc:
            log.warning("claim failed: %s", exc)
            return None

    async def _idle(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waits, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()

    async def _run(self, cmd: Command) -> None:
        lease = self.lease
        assert lease is not None
        log.info("command %d: %s %s (generation %d)", cmd.id, cmd.kind, cmd.sandbox_id, cmd.generation)
        ctx = livemigrate.NodeCtx(self.key, self.info.address, self.db, self.inflight) if self.key is not None else None
        out = await actions.execute(self.service, cmd, self.artifacts, more=actions_wide.dispatch, migrate_ctx=ctx)
        accepted = await self._report(lease, cmd, out)
        if out.after is not None:  # live migration: the source's part after the handover
            await out.after(accepted)
        if not accepted:  # fenced meanwhile: what we did here is not the cluster's truth
            log.warning("command %d: result refused (lease lapsed); reconciling", cmd.id)
            await self._reconcile()

    async def _report(self, lease: Lease, cmd: Command, out: actions.Outcome) -> bool:
        """Finish the command, retrying through a database restart: an unreported
        command would hold the sandbox's one open slot. Gives up (False) only once the
        lease lapsed, when the reaper settles it instead."""
        claimed = lease.epoch
        while True:
            try:
                return await outbox.finish(self.db, lease, cmd, ok=out.ok, state=out.state, reason=out.reason,
                                           result=out.result, error=out.error, local_id=out.local_id,
                                           snapshot_id=out.snapshot_id, node_id=out.node_id)
            except psycopg.Error as exc:
                log.warning("command %d: could not report yet (%s)", cmd.id, exc)
            current = self.lease  # the heartbeat loop renews it meanwhile
            if current is None or current.epoch != claimed:
                return False  # rejoined under a new epoch: the database would refuse it anyway
            lease = current
            try:
                nodes.check(lease)
            except nodes.Fenced:
                return False
            await asyncio.sleep(0.5)
