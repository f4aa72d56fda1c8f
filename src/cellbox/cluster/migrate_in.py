"""Live migration, the target node's side: its migration port (the data-path port + 1).

The source node (``livemigrate.py``) calls, in order, for one migration ID:

    PUT    /migrations/<mid>/base     btrfs send stream of the rootfs taken while it ran
    PUT    /migrations/<mid>/delta    the incremental stream taken frozen (-p base)
    PUT    /migrations/<mid>/mem      tar of the CRIU images (no lazy pages in them)
    POST   /migrations/<mid>/restore  {manifest, project, name, cluster_id, page_server}
    DELETE /migrations/<mid>          abort: remove whatever this migration made here

Every call carries the source's token (HMAC with the cluster key over the migration
and *this* node's ID; ``livemigrate.verify``): 401 otherwise, before a byte is read.
The received files form a memory snapshot in the pool (``pool/snapshots/<mid>``), and
the restore is the service's create-from-snapshot with one difference, ``lazy_remote``
in its manifest: pages come from the source's page server over TLS. The snapshot is
dropped once the daemon has every page. If the daemon fails (the source died
mid-transfer), the restored copy is missing memory: it is destroyed and the cluster's
record falls back to the last suspend image (or fails if it has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import ids
from ..errors import CellboxError
from ..manager.service import CreateOptions, SandboxService
from ..manager.snapshot_store import SnapshotRecord, SnapshotStatus, SnapshotType
from ..manager.spec import CreateSpec
from ..runtime import checkpoint, lazymig
from ..storage import btrfs
from . import livemigrate, pagetls
from .db import Db

log = logging.getLogger(__name__)
MAX_RESTORE_BODY = 4 << 20


class Inbound:
    def __init__(self, service: SandboxService, key: bytes, node_id: str, db: Db | None) -> None:
        self.service, self.key, self.node_id, self.db = service, key, node_id, db
        self.settings = service.manager.settings
        self.restored: dict[str, str] = {}  # migration -> local ID restored here
        self.tasks: set[asyncio.Task[None]] = set()

    def paths(self, mid: str) -> tuple[Path, Path, Path]:
        snaps = self.settings.pool / "snapshots"
        return snaps / f".mig-{mid}", snaps / mid, self.settings.data_dir / "tmp" / f"mig-in-{mid}"

    async def receive(self, mid: str, part: str, body: AsyncIterator[bytes]) -> None:
        scratch, snap, _ = self.paths(mid)
        if part == "base":
            scratch.mkdir(parents=True, exist_ok=False)
            argv = ["btrfs", "receive", "-q", "-e", str(scratch)]
        elif part == "delta":
            snap.mkdir(parents=True, exist_ok=False)
            argv = ["btrfs", "receive", "-q", "-e", str(snap)]
        else:
            (snap / "mem").mkdir(mode=0o700)
            argv = ["tar", "-C", str(snap / "mem"), "--no-same-owner", "-xf", "-"]
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stderr is not None
        try:
            async for chunk in body:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        err = await proc.stderr.read()
        if await proc.wait() != 0:
            raise CellboxError(f"{argv[0]} of {part} failed: {err.decode(errors='replace')[-300:]}")

    async def restore(self, mid: str, req: dict[str, Any]) -> str:
        _, snap, tmp = self.paths(mid)
        ps = req["page_server"]
        if not (snap / "rootfs").is_dir() or not (snap / "mem" / "inventory.img").exists():
            raise CellboxError("rootfs or images missing: send base, delta and mem first")
        tls = pagetls.write(tmp / "tls", self.key, mid, str(ps["address"]), "client")
        manifest = dict(req["manifest"])
        # Ours, never the source's: what the restore's lazy-pages daemon connects to.
        manifest["lazy_remote"] = {"address": str(ps["address"]), "port": int(ps["port"]),
                                   "tls_args": tls.criu_args(),
                                   "hostname": str(manifest["bundle_config"].get("hostname", ""))[:64]}
        manifest.pop("volumes", None)  # volumes are per host: not carried (docs/cluster.md)
        (snap / "manifest.json").write_text(json.dumps(manifest))
        (snap / "manifest.json").chmod(0o600)
        project = str(req["project"])
        rec = SnapshotRecord(id=mid, namespace=project, sandbox_id=str(manifest["sandbox_id"]),
                             snapshot_type=SnapshotType.MEMORY, status=SnapshotStatus.COMPLETED,
                             base_image=manifest.get("image"), source=manifest)
        self.service.manager.memory.snapshots.insert(rec)  # cluster: no public import method yet
        local = ids.new_id()
        spec = CreateSpec(namespace=project, name=req.get("name"), sandbox_id=local)
        made = await self.service.create(CreateOptions(spec=spec, snapshot_id=mid), wait=True, budget=None)
        if made.status.value != "running":
            lazymig.DAEMONS.pop(str(snap / "mem"), None)
            raise CellboxError(f"restore failed: {made.extra.get('error') or made.termination_reason}")
        self.restored[mid] = made.id
        task = asyncio.ensure_future(self._pages(mid, made.id, project, str(req.get("cluster_id", ""))))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return made.id

    async def _pages(self, mid: str, local: str, project: str, cluster_id: str) -> None:
        """Until every page is here; then the snapshot goes. A failed transfer (the
        source died) leaves memory holes: the copy is destroyed, the cluster told."""
        _, snap, _ = self.paths(mid)
        daemon = lazymig.DAEMONS.pop(str(snap / "mem"), None)
        code = await daemon.wait() if daemon is not None else 0
        if code != 0:
            log.warning("migration %s: page transfer failed (%s): %s", mid, code,
                        checkpoint._log_errors(daemon.work / "lazy-pages.log") if daemon else "")
            with contextlib.suppress(Exception):
                await self.service.delete(local, project, reason="migration_lost")
            await self._lost(cluster_id, local)
        self.restored.pop(mid, None)
        await self.cleanup(mid, keep_restored=True)

    async def _lost(self, cluster_id: str, local: str) -> None:
        if self.db is None or not cluster_id:
            return
        async with self.db.tx() as cur:
            await cur.execute(
                """UPDATE sandboxes SET
                       state = CASE WHEN snapshot_id IS NOT NULL THEN 'suspended' ELSE 'failed' END,
                       desired_state = CASE WHEN snapshot_id IS NOT NULL THEN 'suspended' ELSE 'failed' END,
                       reason = 'migration_lost: the source stopped during the page transfer'
                                || CASE WHEN snapshot_id IS NOT NULL THEN '; resumable from its last suspend image'
                                   ELSE '' END,
                       node_id = CASE WHEN snapshot_id IS NOT NULL THEN NULL ELSE node_id END,
                       local_id = NULL, generation = generation + 1, updated_at = now()
                   WHERE id = %s AND node_id = %s AND local_id = %s""", (cluster_id, self.node_id, local))

    async def sweep(self) -> None:
        """At start: what migrations cut short by a crash of this node left (their
        staging, their half-received snapshots; a restored copy is the reconcile's)."""
        snaps, tmp = self.settings.pool / "snapshots", self.settings.data_dir / "tmp"
        for d in [*snaps.glob(".mig-*"), *tmp.glob("mig-*")]:
            mid = d.name.split("-", 1)[1].removeprefix("in-")
            if ids.is_id(mid):
                log.warning("removing what migration %s left (%s)", mid, d)
                await self.cleanup(mid, keep_restored=True)
                await btrfs.delete(snaps / f".mig-{mid}" / "rootfs")

    async def cleanup(self, mid: str, *, keep_restored: bool = False) -> None:
        scratch, snap, tmp = self.paths(mid)
        if (daemon := lazymig.DAEMONS.pop(str(snap / "mem"), None)) is not None:
            await daemon.kill()
        if not keep_restored and (local := self.restored.pop(mid, None)) is not None:
            with contextlib.suppress(Exception):
                rec = self.service.manager.memory.get(local)
                await self.service.delete(local, rec.namespace, reason="migration_aborted")
        mem = self.service.manager.memory
        if mem.snapshots.get(mid) is not None:
            mem.snapshots.delete(mid)
        for sub in (scratch / "base", snap / "rootfs"):
            await btrfs.delete(sub)
        for d in (scratch, snap, tmp):
            await asyncio.to_thread(shutil.rmtree, d, True)


def app(inbound: Inbound, extra: list[Route] | None = None) -> Starlette:
    """The node's internal port: the migration routes, and ``extra`` (the replicas'
    reads, ``node_reads.py``), each checking its own credential."""
    def check(request: Request) -> str | JSONResponse:
        mid = request.path_params["mid"]
        if not ids.is_id(mid) or not livemigrate.verify(inbound.key, request.headers.get("authorization"), mid,
                                                         inbound.node_id):
            return JSONResponse({"code": "UNAUTHORIZED", "message": "not a migration to this node"}, 401)
        return str(mid)

    async def part(request: Request) -> JSONResponse:
        mid = check(request)
        if isinstance(mid, JSONResponse):
            return mid
        name = request.path_params["part"]
        if name not in ("base", "delta", "mem"):
            return JSONResponse({"code": "NOT_FOUND", "message": f"no part {name!r}"}, 404)
        try:
            await inbound.receive(mid, name, request.stream())
        except (CellboxError, OSError) as exc:
            return JSONResponse({"code": "MIGRATION_FAILED", "message": str(exc)}, 409)
        return JSONResponse({"ok": True})

    async def restore(request: Request) -> JSONResponse:
        mid = check(request)
        if isinstance(mid, JSONResponse):
            return mid
        raw = await request.body()
        try:
            if len(raw) > MAX_RESTORE_BODY:
                raise ValueError("body too large")
            body = json.loads(raw)
            local = await inbound.restore(mid, body)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"code": "INVALID_REQUEST", "message": f"bad restore request: {exc}"}, 400)
        except (CellboxError, OSError) as exc:
            await inbound.cleanup(mid)
            return JSONResponse({"code": "MIGRATION_FAILED", "message": str(exc)}, 409)
        return JSONResponse({"local_id": local})

    async def abort(request: Request) -> JSONResponse:
        mid = check(request)
        if isinstance(mid, JSONResponse):
            return mid
        await inbound.cleanup(mid)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/migrations/{mid}/{part}", part, methods=["PUT"]),
                             Route("/migrations/{mid}/restore", restore, methods=["POST"]),
                             Route("/migrations/{mid}", abort, methods=["DELETE"]), *(extra or [])])


class Server:
    """The migration port: uvicorn serving :func:`app`, stopped with the node."""

    def __init__(self, server: Any, task: "asyncio.Task[None]", inbound: Inbound) -> None:
        self.server, self.task, self.inbound = server, task, inbound

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await self.task
        for t in list(self.inbound.tasks):
            t.cancel()
        if self.inbound.db is not None:
            await self.inbound.db.close()


async def serve(service: SandboxService, key: bytes, node_id: str, dsn: str | None, host: str, port: int,
                extra: list[Route] | None = None) -> Server:
    import uvicorn

    inbound = Inbound(service, key, node_id, Db(dsn) if dsn else None)
    await inbound.sweep()
    server = uvicorn.Server(uvicorn.Config(app(inbound, extra), host=host, port=port, lifespan="off", log_level="warning",
                                           access_log=False))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the node's own handle them
    task = asyncio.ensure_future(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        task.result()  # the bind failed: say why
    return Server(server, task, inbound)
