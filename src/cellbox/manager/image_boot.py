"""Starting sandboxes from images: boot, restore, and making a pre-boot snapshot.

Part of :class:`~cellbox.manager.images.ImageManager` (a mixin, kept apart so each
module stays one concern): which way a sandbox starts from an image (``_create_from``:
boot an OCI image, boot a registered filesystem snapshot, or restore a memory
snapshot), and how an image gets its memory snapshot (``_preboot``: boot, agent
answers, warm-up runs to completion, CRIU dump, helper sandbox destroyed).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Callable


from ..errors import CellboxError, InvalidRequest
from ..images.build import BuildFailed
from ..images.catalog import ImageRecord
from . import agent_client
from .records import SandboxRecord
from .snapshot_store import SnapshotType

if TYPE_CHECKING:
    from .images import ImageManager
    from .sandboxes import CreateSpec

log = logging.getLogger(__name__)
IMAGES_NAMESPACE = "__images__"
WARMUP_TIMEOUT = 600.0
Progress = Callable[[str], None]


class BootMixin:
    async def _preboot(self: ImageManager, rec: ImageRecord, warmup: list[str], on_line: Progress) -> None:
        """Boot a sandbox from the image, run the warm-up command to completion, take a
        memory snapshot (files + processes), and keep it with the image."""
        from .sandboxes import CreateSpec

        on_line(f"pre-booting {rec.name}")
        rec.memory_snapshot_id = None  # boot, not restore
        self.catalog.put(rec)
        sbx = await self._create_from(rec, CreateSpec(image=rec.name, namespace=IMAGES_NAMESPACE), preboot=False)
        try:
            # The agent must have answered once: until its loop runs, the connection that
            # saw its port open waits in the listen backlog, and CRIU refuses to dump
            # in-flight connections. Answering also means the snapshot is "agent ready".
            await self._agent_health(sbx)
            if warmup:
                on_line(f"warm-up: {' '.join(warmup)}")
                await self._run_warmup(sbx, warmup, on_line)
            snap = await self.m.memory.snapshot(sbx.id, IMAGES_NAMESPACE, SnapshotType.MEMORY)
            rec.memory_snapshot_id, rec.warmup = snap.id, warmup or None
            self.catalog.put(rec)
        except BaseException:
            # A failed dump leaves a "failed" snapshot record nobody lists (our namespace).
            for failed in self.m.memory.snapshots.list(IMAGES_NAMESPACE, sbx.id):
                if failed.id != rec.memory_snapshot_id:
                    await self._drop_snapshot(failed.id)
            raise
        finally:
            await self._destroy(sbx)
        on_line(f"pre-booted: memory snapshot {snap.id}")

    async def _destroy(self: ImageManager, sbx: SandboxRecord, attempts: int = 3) -> None:
        """Destroy the pre-boot sandbox; retried, because right after a dump its
        subvolume can still be busy for a moment (seen under load: EBUSY on delete)."""
        for attempt in range(attempts):
            try:
                await self.m.destroy(sbx.id, IMAGES_NAMESPACE, reason="preboot_done")
                return
            except CellboxError as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("pre-boot sandbox %s: destroy failed (%s); retrying", sbx.id, exc)
                await asyncio.sleep(0.5 * (attempt + 1))

    async def _agent_health(self: ImageManager, sbx: SandboxRecord) -> None:
        ip, port = self.m.agent_address(sbx)
        status, _ = await self.m.agent.call(ip, port, agent_client.key_of(sbx), "GET", "/api/v1/health",
                                            timeout=30, max_bytes=4096)
        if status != 200:
            raise BuildFailed(f"the pre-boot sandbox's agent answered {status} to its health check")

    async def _run_warmup(self: ImageManager, sbx: SandboxRecord, argv: list[str], on_line: Progress) -> None:
        ip, port = self.m.agent_address(sbx)
        body = {"command": argv[0], "args": argv[1:], "timeout": WARMUP_TIMEOUT}
        exit_code: int | None = None
        # The image's code runs in that sandbox: its agent's answers are untrusted (bounded,
        # authenticated, one deadline), as everywhere (agent_client.py).
        try:
            async for event in self.m.agent.sse_data(ip, port, agent_client.key_of(sbx), "/api/v1/processes/run",
                                                     json_body=body, timeout=WARMUP_TIMEOUT + 30):
                if not isinstance(event, dict):
                    continue
                if isinstance(event.get("line"), str):
                    on_line(event["line"])
                elif "exit_code" in event or "signal" in event:
                    exit_code = event.get("exit_code")
                    if not isinstance(exit_code, int):
                        sig = event.get("signal")
                        exit_code = 128 + (sig if isinstance(sig, int) else 0)
        except agent_client.AgentError as exc:
            raise BuildFailed(f"warm-up {argv[0]!r}: {exc}") from None
        if exit_code != 0:
            raise BuildFailed(f"warm-up command {' '.join(argv)!r} exited with {exit_code}")

    def _restores(self: ImageManager, rec: ImageRecord) -> bool:
        """Whether a create from this pre-booted image restores its memory snapshot.

        Measured (bench/images.py, docs/ARCHITECTURE.md): booting a sandbox (~90 ms to
        a ready agent) beats restoring one (~170-210 ms: CRIU reads and maps the dump),
        so a restore is used when the memory holds something a boot would not recreate:
        the warm-up command's work, or the processes of a registered memory snapshot.
        """
        mode = self.settings.preboot_restore
        if mode == "always":
            return True
        if mode == "never":
            return False
        return bool(rec.warmup) or bool(rec.extra.get("memory_state"))

    async def _create_from(self: ImageManager, rec: ImageRecord, spec: "CreateSpec", *, preboot: bool) -> SandboxRecord:
        if preboot and rec.memory_snapshot_id and self._restores(rec):
            return await self._restore(rec, spec, rec.memory_snapshot_id, memory=True)
        if rec.kind == "snapshot":
            assert rec.snapshot_id
            return await self._restore(rec, spec, rec.snapshot_id, memory=False)
        sbx = await self.m.create_cold(spec)
        sbx.extra["from_image"] = {"name": rec.name, "restored": False, "digest": rec.digest}
        self.m.store.update(sbx)
        return sbx

    async def _restore(self: ImageManager, image: ImageRecord, spec: "CreateSpec", snapshot_id: str, *,
                       memory: bool) -> SandboxRecord:
        from .sandboxes import DEFAULT_DISK_MB, MIN_FREE_DISK_MB
        from .warm import apply_limits

        snap = self.m.memory.get_snapshot(snapshot_id)
        manifest = dict(snap.source)
        image_mb = int(manifest.get("image_mb", 0))
        disk_mb = spec.disk_mb or max(DEFAULT_DISK_MB, image_mb + MIN_FREE_DISK_MB)
        if disk_mb < image_mb + MIN_FREE_DISK_MB:
            raise InvalidRequest(f"disk_mb={disk_mb} is too small for the image ({image_mb} MiB)")
        resources = {"cpus": spec.cpus, "memory_mb": spec.memory_mb, "disk_mb": disk_mb,
                     "pids_limit": spec.pids_limit}
        if not memory:
            # A filesystem snapshot boots with the request's resources: patch the bundle.
            manifest["bundle_config"] = _with_limits(manifest["bundle_config"], resources)
        manifest["resources"] = resources if not memory else dict(manifest["resources"], disk_mb=disk_mb)
        manifest["image"] = image.name
        rec = await self.m.memory._start_from(
            self.m.memory._snapshot_dir(snap.id), manifest, namespace=spec.namespace, name=spec.name,
            timeout_secs=spec.timeout_secs, memory=memory, sandbox_id=spec.sandbox_id, network=spec.network,
        )
        if memory:
            try:
                apply_limits(self.m, rec.id, spec, disk_mb - image_mb)
            except BaseException:
                await self.m.destroy(rec.id, rec.namespace, reason="startup_failed")
                raise
            rec.cpus, rec.memory_mb, rec.pids_limit = spec.cpus, spec.memory_mb, spec.pids_limit
        rec.extra["from_image"] = {"name": image.name, "restored": memory, "snapshot_id": snapshot_id}
        self.m.store.update(rec)
        return rec

def _with_limits(cfg: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    from ..runtime.bundle import CFS_PERIOD

    cfg = json.loads(json.dumps(cfg))
    r = cfg["linux"]["resources"]
    r["memory"] = {"limit": res["memory_mb"] << 20, "swap": res["memory_mb"] << 20}
    r["cpu"] = {"quota": max(1000, int(res["cpus"] * CFS_PERIOD)), "period": CFS_PERIOD}
    r["pids"] = {"limit": res["pids_limit"]}
    return cfg
