"""Live migration, the source node's side: move a running sandbox to another node by
CRIU post-copy, driven by one ``migrate`` command claimed by the source.

1. While it runs: a read-only btrfs snapshot of its rootfs, streamed (``btrfs send``)
   to the target's migration port (``migrate_in.py``).
2. Frozen (cgroup freezer, the sandbox's lock held): a second snapshot, sent as the
   incremental delta against the first (``btrfs send -p``); then ``runc checkpoint
   --lazy-pages``: everything but the memory pages, which CRIU's page server on this
   node then serves (TLS, per-migration certificates: ``pagetls.py``).
3. The images go to the target, which restores with ``criu lazy-pages`` fetching from
   here and answers once the sandbox's agent answers. The command is reported done
   with the target as the sandbox's node (the route NOTIFY drops the proxies' cache).
4. After the report: wait until the target fetched every page (CRIU then kills the
   tasks here), then remove the local copy. A report the cluster refused (this node
   was fenced) makes the target drop its copy instead.

Any failure before the target answered: the dump is aborted, the network lock lifted,
the sandbox thawed; it runs on here as before, and the target removes what it got.
Pre-copy (iterative dumps while running) would shrink step 2's memory part, but needs
soft-dirty tracking (``CONFIG_MEM_SOFT_DIRTY``), which this kernel lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .. import ids
from ..errors import Conflict
from ..manager.records import Status
from ..manager.service import SandboxService
from ..manager.snapshot_store import SnapshotType
from ..proxy.inflight import InFlight
from ..runtime import checkpoint, lazymig
from ..storage import btrfs, rootfs
from . import pagetls
from .db import Db
from .records import Command

log = logging.getLogger(__name__)
TOKEN_TTL_S = 600
# How long the source waits, marked ``migrating`` but not yet frozen, for the requests
# already forwarded to the sandbox to be answered (proxy/inflight.py): a request caught
# by the freeze is cut only after the target has every page, seconds later.
DRAIN_S = 1.0
# First, time for a request routed just before the proxies heard of ``migrating`` (the
# NOTIFY) to reach this node's proxy and be counted.
ROUTE_GRACE_S = 0.05
CHUNK = 1 << 20


@dataclass(frozen=True)
class NodeCtx:
    """What a node gives its migrations: the cluster key, its data-path address, and
    its database connection (the frozen phase is marked on the sandbox's row)."""

    key: bytes
    address: str
    db: Db | None = None
    inflight: InFlight | None = None  # the node proxy's open requests, by local sandbox ID


def port_of(listen: str) -> int:
    """The migration port of a node: its data-path port + 1."""
    return int(listen.rpartition(":")[2]) + 1


def token(key: bytes, migration_id: str, target_node: str, now: float | None = None) -> str:
    """What the source shows the target: HMAC with the cluster key over this migration and
    that node (a token for another node or migration opens nothing)."""
    expiry = int((now or time.time()) + TOKEN_TTL_S)
    mac = hmac.new(key, f"migrate\n{migration_id}\n{target_node}\n{expiry}".encode(), hashlib.sha256).hexdigest()
    return f"cbx_mig_{expiry}_{mac}"


def verify(key: bytes, header: str | None, migration_id: str, node: str) -> bool:
    text = (header or "").removeprefix("Bearer ").strip()
    if not text.startswith("cbx_mig_"):
        return False
    expiry, _, mac = text[len("cbx_mig_"):].partition("_")
    if not expiry.isdigit() or int(expiry) < time.time():
        return False
    want = hmac.new(key, f"migrate\n{migration_id}\n{node}\n{expiry}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, want)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


async def _stream(argv: list[str]) -> AsyncIterator[bytes]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while chunk := await proc.stdout.read(CHUNK):
            yield chunk
    except BaseException:  # the upload stopped: so does the sender
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    err = await proc.stderr.read()
    if await proc.wait() != 0:
        raise Conflict(f"{argv[0]} {argv[1]} failed ({proc.returncode}): {err.decode(errors='replace')[-300:]}",
                       code="MIGRATION_FAILED")


async def _put(http: httpx.AsyncClient, url: str, argv: list[str]) -> None:
    r = await http.put(url, content=_stream(argv))
    if r.status_code != 200:
        raise Conflict(f"target refused {url.rsplit('/', 1)[-1]}: {r.status_code} {r.text[:300]}",
                       code="MIGRATION_FAILED")


class Outbound:
    """One migration of one sandbox off this node (steps in the module docstring)."""

    def __init__(self, service: SandboxService, cmd: Command, ctx: NodeCtx) -> None:
        p = cmd.payload
        key, own_address = ctx.key, ctx.address
        self.service, self.cmd, self.key, self.db = service, cmd, key, ctx.db
        self.project, self.local = p["project"], p.get("local_id") or cmd.sandbox_id
        self.mid, self.target_node = str(p["migration"]), str(p["target_node"])
        if not ids.is_id(self.mid):
            raise Conflict("migration ID is malformed", code="MIGRATION_FAILED")
        self.address = own_address.rpartition(":")[0]
        thost, _, tport = str(p["target_address"]).rpartition(":")
        self.http = httpx.AsyncClient(base_url=f"http://{thost}:{int(tport) + 1}/migrations",
                                      headers={"Authorization": f"Bearer {token(key, self.mid, self.target_node)}"},
                                      timeout=httpx.Timeout(600, connect=10))
        m = service.manager
        self.pool = m.settings.pool
        self.scratch = self.pool / "snapshots" / f".mig-{self.mid}"
        self.tmp = m.settings.data_dir / "tmp" / f"mig-{self.mid}"
        self.inflight = ctx.inflight
        self.timing: dict[str, float] = {}
        self.dump: lazymig.LazyDump | None = None

    async def run(self) -> tuple[str, Callable[[bool], Awaitable[None]]]:
        """Until the target runs it: its local ID there, and what to do after the report."""
        mem = self.service.manager.memory
        rec = mem.get(self.local, self.project)
        if rec.status != Status.RUNNING:
            raise Conflict(f"sandbox {rec.id} is {rec.status.value}; only a running sandbox migrates",
                           code="INVALID_STATE")
        if mem.volumes is not None and mem.volumes.mounts(rec.id):
            raise Conflict(f"sandbox {rec.id} has volumes mounted: they are per host, it cannot migrate",
                           code="MIGRATION_UNSUPPORTED")
        t0 = time.monotonic()
        try:
            self.scratch.mkdir(parents=True)
            self.tmp.mkdir(parents=True, mode=0o700)
            await btrfs.snapshot(rootfs.path(self.pool, rec.id), self.scratch / "base", readonly=True)
            await _put(self.http, f"/{self.mid}/base", ["btrfs", "send", "-q", str(self.scratch / "base")])
            self.timing["rootfs_s"] = time.monotonic() - t0
            async with mem._lock(rec.id):  # cluster: no suspend/snapshot/dump meanwhile
                # A lazy restore still streaming pages into it must finish before a dump.
                await mem.assembler.runtime.settled(ids.container(rec.id))
                new_local = await self._frozen(rec)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.http.delete(f"/{self.mid}")
            await self._cleanup()
            raise
        self.timing["total_to_running_s"] = time.monotonic() - t0
        return new_local, self._after

    async def _frozen(self, rec: Any) -> str:
        m = self.service.manager
        cid = ids.container(rec.id)
        await self._mark("migrating")
        if self.inflight is not None:
            t = time.monotonic()
            await asyncio.sleep(ROUTE_GRACE_S)
            left = await self.inflight.idle(rec.id, DRAIN_S)
            self.timing["drain_s"] = time.monotonic() - t
            if left:
                log.info("migration %s: %d request(s) of %s still open after %.1fs: they are cut",
                         self.mid, left, rec.id, DRAIN_S)
        t_freeze = time.monotonic()
        await checkpoint.pause(m.runc, cid)
        delta: asyncio.Task[None] | None = None
        try:
            await btrfs.snapshot(rootfs.path(self.pool, rec.id), self.scratch / "rootfs", readonly=True)
            # The delta streams while CRIU dumps: both only read the frozen sandbox, and
            # the frozen window is their longer one, not their sum (35-245 ms of delta
            # before, in bench/migrate.py on a quiet host).
            delta = asyncio.ensure_future(self._send_delta(t_freeze))
            tls = pagetls.write(self.tmp / "tls", self.key, self.mid, self.address, "server")
            port = free_port(self.address)
            self.dump = await lazymig.LazyDump.start(m.runc, cid, self.tmp / "mem", address=self.address, port=port,
                                                     criu_conf=self._criu_conf(rec.id), extra_conf=tls.criu_config())
            await self.dump.ready()
            self.timing["dump_s"] = time.monotonic() - t_freeze
            await delta  # the target makes the snapshot's directory from it: before the images
            await _put(self.http, f"/{self.mid}/mem", ["tar", "-C", str(self.tmp / "mem"), "--exclude", "./work",
                                           "--exclude", "./runc.err", "-cf", "-", "."])
            self.timing["images_s"] = time.monotonic() - t_freeze
            manifest = m.memory._manifest(rec, SnapshotType.MEMORY)  # cluster: the memory snapshot's manifest
            r = await self.http.post(f"/{self.mid}/restore", json={
                "manifest": manifest, "project": self.project, "name": rec.name, "cluster_id": self.cmd.sandbox_id,
                "page_server": {"address": self.address, "port": port}})
            if r.status_code != 200:
                raise Conflict(f"target {self.target_node} could not restore: {r.text[:400]}",
                               code="MIGRATION_FAILED")
            self.timing["frozen_s"] = time.monotonic() - t_freeze
            return str(r.json()["local_id"])
        except BaseException:
            if delta is not None and not delta.done():
                delta.cancel()
                with contextlib.suppress(BaseException):
                    await delta
            if self.dump is not None:
                await self.dump.abort()
            await lazymig.unlock_network(f"/run/netns/{ids.netns(rec.id)}")
            await checkpoint.resume(m.runc, cid)
            log.warning("migration %s of %s failed; it runs on here", self.mid, rec.id)
            raise

    async def _send_delta(self, t_freeze: float) -> None:
        await _put(self.http, f"/{self.mid}/delta", ["btrfs", "send", "-q", "-p", str(self.scratch / "base"),
                                         str(self.scratch / "rootfs")])
        self.timing["delta_s"] = time.monotonic() - t_freeze

    async def _mark(self, state: str) -> None:
        """The sandbox's row says ``migrating`` while it is frozen: the proxies hold its
        requests until the command ends instead of sending them to a frozen copy
        (the state change NOTIFYs their route caches). Only for this command's
        generation; the command's finish sets the state that follows."""
        if self.db is None:
            return
        async with self.db.tx() as cur:
            await cur.execute("UPDATE sandboxes SET state = %s, updated_at = now() WHERE id = %s AND generation = %s",
                              (state, self.cmd.sandbox_id, self.cmd.generation))

    def _criu_conf(self, sandbox_id: str) -> Path:
        cfg = json.loads((self.service.manager.settings.sandboxes_dir / sandbox_id / "config.json").read_text())
        path = cfg.get("annotations", {}).get(checkpoint.CRIU_CONFIG_ANNOTATION)
        if not path:
            raise Conflict("this sandbox has no CRIU config of its own", code="MIGRATION_FAILED")
        return Path(path)

    async def _after(self, accepted: bool) -> None:
        """After the report: serve pages until the target has all, then drop our copy."""
        try:
            if not accepted:  # fenced: the cluster does not know the target's copy
                with contextlib.suppress(Exception):
                    await self.http.delete(f"/{self.mid}")
            assert self.dump is not None
            t = time.monotonic()
            rc = await self.dump.wait()
            log.info("migration %s: pages served in %.2fs (runc %s)", self.mid, time.monotonic() - t, rc)
            if rc != 0:
                log.warning("migration %s: page transfer ended with %s: %s", self.mid, rc, self.dump.errors())
            await self._kill_frozen()
            try:
                await self.service.delete(self.local, self.project, reason="migrated")
            except Exception as exc:  # noqa: BLE001 - logged: the reconcile takes it later
                log.warning("migration %s: removing the source copy failed: %s", self.mid, exc)
        finally:
            await self._cleanup()

    async def _kill_frozen(self) -> None:
        """The source's tasks are still in the cgroup we froze: CRIU's SIGKILL (after the
        last page) is delivered only once thawed. Kill every task first, so thawing
        never lets this copy run again beside the target's."""
        cg = ids.cgroup_path(self.local)
        procs = Path("/sys/fs/cgroup/pids") / cg.lstrip("/") / "cgroup.procs"
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
        await checkpoint.resume(self.service.manager.runc, ids.container(self.local))

    async def _cleanup(self) -> None:
        await self.http.aclose()
        for sub in ("rootfs", "base"):
            await btrfs.delete(self.scratch / sub)
        await asyncio.to_thread(shutil.rmtree, self.scratch, True)
        await asyncio.to_thread(shutil.rmtree, self.tmp, True)
