"""Pre-booting an image: boot a sandbox, run the warm-up, keep a memory snapshot.

A memory snapshot of a booted sandbox (agent up, an optional warm-up command already
run) makes an image *pre-booted*: a create from it can restore that memory instead
of booting (``images.source_for``). Making one is: boot (no warm pool, no restore),
agent answers, warm-up runs to completion, CRIU dump, helper sandbox destroyed. The
helper is made and destroyed through callables (``create``, ``destroy``), so this
module imports nothing above it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import CellboxError
from ..images.build import BuildFailed
from ..images.catalog import Catalog, ImageRecord
from . import agent_client
from .agent_client import AgentClient
from .memstate import MemoryState
from .records import SandboxRecord, Status
from .snapshot_store import SnapshotType
from .spec import CreateSpec

log = logging.getLogger(__name__)
IMAGES_NAMESPACE = "__images__"
WARMUP_TIMEOUT = 600.0
Progress = Callable[[str], None]


# Boot a sandbox of a spec without warm pool or restore; destroy one (id, namespace, reason).
Create = Callable[[CreateSpec], Awaitable[SandboxRecord]]
Destroy = Callable[[str, str, str], Awaitable[object]]


class Preboot:
    def __init__(self, catalog: Catalog, memory: MemoryState, agent: AgentClient, agent_port: int, *,
                 create: Create, destroy: Destroy, drop_snapshot: Callable[[str], Awaitable[None]]) -> None:
        self.catalog = catalog
        self.memory = memory
        self.agent = agent
        self.agent_port = agent_port
        self._create = create
        self._destroy_one = destroy
        self._drop_snapshot = drop_snapshot

    async def run(self, rec: ImageRecord, warmup: list[str], on_line: Progress) -> None:
        """Boot a sandbox from the image, run the warm-up command to completion, take a
        memory snapshot (files + processes), and keep it with the image."""
        on_line(f"pre-booting {rec.name}")
        rec.memory_snapshot_id = None  # boot, not restore
        self.catalog.put(rec)
        sbx = await self._create(CreateSpec(image=rec.name, namespace=IMAGES_NAMESPACE))
        try:
            # The agent must have answered once: until its loop runs, the connection that
            # saw its port open waits in the listen backlog, and CRIU refuses to dump
            # in-flight connections. Answering also means the snapshot is "agent ready".
            await self._agent_health(sbx)
            if warmup:
                on_line(f"warm-up: {' '.join(warmup)}")
                await self._run_warmup(sbx, warmup, on_line)
            snap = await self.memory.snapshot(sbx.id, IMAGES_NAMESPACE, SnapshotType.MEMORY)
            rec.memory_snapshot_id, rec.warmup = snap.id, warmup or None
            self.catalog.put(rec)
        except BaseException:
            # A failed dump leaves a "failed" snapshot record nobody lists (our namespace).
            for failed in self.memory.snapshots.list(IMAGES_NAMESPACE, sbx.id):
                if failed.id != rec.memory_snapshot_id:
                    await self._drop_snapshot(failed.id)
            raise
        finally:
            await self._destroy(sbx)
        on_line(f"pre-booted: memory snapshot {snap.id}")

    async def _destroy(self, sbx: SandboxRecord, attempts: int = 3) -> None:
        """Destroy the pre-boot sandbox; retried, because right after a dump its
        subvolume can still be busy for a moment (seen under load: EBUSY on delete)."""
        for attempt in range(attempts):
            try:
                await self._destroy_one(sbx.id, IMAGES_NAMESPACE, "preboot_done")
                return
            except CellboxError as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("pre-boot sandbox %s: destroy failed (%s); retrying", sbx.id, exc)
                await asyncio.sleep(0.5 * (attempt + 1))

    def _address(self, sbx: SandboxRecord) -> tuple[str, int]:
        if sbx.status != Status.RUNNING or not sbx.ip:
            raise BuildFailed(f"the pre-boot sandbox is {sbx.status.value}, not running")
        return sbx.ip, self.agent_port

    async def _agent_health(self, sbx: SandboxRecord) -> None:
        ip, port = self._address(sbx)
        status, _ = await self.agent.call(ip, port, agent_client.key_of(sbx), "GET", "/api/v1/health",
                                            timeout=30, max_bytes=4096)
        if status != 200:
            raise BuildFailed(f"the pre-boot sandbox's agent answered {status} to its health check")

    async def _run_warmup(self, sbx: SandboxRecord, argv: list[str], on_line: Progress) -> None:
        ip, port = self._address(sbx)
        body = {"command": argv[0], "args": argv[1:], "timeout": WARMUP_TIMEOUT}
        exit_code: int | None = None
        # The image's code runs in that sandbox: its agent's answers are untrusted (bounded,
        # authenticated, one deadline), as everywhere (agent_client.py).
        try:
            async for event in self.agent.sse_data(ip, port, agent_client.key_of(sbx), "/api/v1/processes/run",
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
