"""The server's once-a-second sweep: sandbox timeouts and dead inits.

* **Ephemeral** sandboxes (no name) with ``timeout_secs > 0`` are destroyed once that
  many seconds have passed since ``created_at``, with ``termination_reason:
  "timeout"`` (spec §4.2: "Ephemeral: timeout ⇒ terminated"; ``0`` or absent = no
  limit). **Named** sandboxes are suspended once ``timeout_secs`` pass without proxy
  traffic (spec §4.2); the next proxy request resumes them if ``auto_resume``.
  Without a ``timeout_secs`` a named sandbox idles out after the server's
  ``named_idle_secs`` (default 600, as Tensorlake); an explicit ``0`` means never.
* Archived (terminated, failed) records past their retention are purged once a minute.
* A running sandbox whose init died (crash, OOM kill) is found from its init PID
  (``/proc``, no subprocess) and handed to ``manager.refresh``, which tears it down
  and marks it ``failed`` (``exited`` / ``oom_killed``). Every ``FULL_CHECK_EVERY``
  sweeps the kernel's view is asked instead, in case a PID was reused: one ``runc
  list`` for all (it checks each init's start time), then ``runc state`` only for those
  it does not show running. Only the running records are read (the status index), so
  100,000 suspended ones cost the sweep nothing (bench/store_scale.py).

Only sandboxes this process manages are swept (``owner.managed_here``).
"""

from __future__ import annotations

import asyncio
import logging

from .. import _procfs, ids
from . import archive, owner
from .records import SandboxRecord, Status, now_ms
from .service import SandboxService
from .warm import WARM_NAMESPACE

log = logging.getLogger(__name__)

INTERVAL = 1.0
FULL_CHECK_EVERY = 30



class Timers:
    def __init__(self, service: SandboxService, interval: float = INTERVAL) -> None:
        self.service = service
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._sweeps = 0

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - the sweep must survive one bad sandbox
                log.exception("timeout sweep failed")
            await asyncio.sleep(self.interval)

    async def sweep(self) -> None:
        self._sweeps += 1
        full = self._sweeps % FULL_CHECK_EVERY == 0
        now = now_ms()
        settings = self.service.manager.settings
        if self._sweeps % archive.PURGE_EVERY == 1:  # issue 14: archived sandboxes expire
            archive.purge(self.service.store, settings.archive_retention_secs, [settings.data_dir / "logs"])
        # The full check: one `runc list`, then `refresh` (one `runc state`) only for
        # sandboxes it does not show running; None (list failed): refresh them all.
        states = await self.service.manager.runc.states() if full else None
        live = self.service.store.with_status([Status.RUNNING.value])  # not the suspended ones
        running = {r.id for r in live}
        for sid in [s for s in self.service.last_activity if s not in running]:
            del self.service.last_activity[sid]
        for rec in live:
            if rec.status != Status.RUNNING or rec.namespace == WARM_NAMESPACE or not owner.managed_here(rec.owner):
                continue
            try:
                if _expired(rec, now):
                    log.info("sandbox %s: timeout_secs=%s elapsed, terminating", rec.id, rec.timeout_secs)
                    await self.service.expire(rec)
                elif (rec.name and (idle := _idle_limit(rec, settings.named_idle_secs))
                      and self.service.idle_seconds(rec) >= idle
                      and self.service.idle_suspend_due(rec)):  # a failed one backs off
                    log.info("sandbox %s: idle for %ss, suspending", rec.id, idle)
                    await self.service.idle_suspend(rec)
                elif (full and _maybe_dead(rec, states)) or not _init_alive(rec):
                    after = await self.service.refresh(rec)
                    if after is not None:
                        log.warning("sandbox %s: %s (%s)", rec.id, after.status.value, after.termination_reason)
            except Exception:  # noqa: BLE001
                log.exception("sweep of sandbox %s failed", rec.id)


def _idle_limit(rec: SandboxRecord, default: int) -> int:
    """Idle seconds before a named sandbox suspends: its ``timeout_secs``; without one
    the server's default (issue 14: Tensorlake's 10 minutes); an explicit 0 = never."""
    return default if rec.timeout_secs is None else rec.timeout_secs


def _expired(rec: SandboxRecord, now: int) -> bool:
    return rec.name is None and rec.timeout_secs is not None and rec.timeout_secs > 0 and (
        now - rec.created_at >= rec.timeout_secs * 1000)


def _maybe_dead(rec: SandboxRecord, states: dict[str, str] | None) -> bool:
    return states is None or states.get(ids.container(rec.id)) not in ("running", "paused")


def _init_alive(rec: SandboxRecord) -> bool:
    return _procfs.alive(rec.init_pid)
