"""Logs of a sandbox, live or kept: what the API's logs routes read.

A running sandbox's lines come from its agent (``SandboxService.logs``, bounded); a
sandbox that ended through the server has the lines its agent held at the end, kept
on the host (``keeper.py``, saved by the service's ``before_terminate`` hook); a
suspended one, those it held when it was suspended (``before_suspend``).
"""

from __future__ import annotations

import asyncio
import logging

from ..manager.records import SandboxRecord, Status
from ..manager.logs import LogLine
from ..manager.service import SandboxService
from .keeper import LogKeeper

log = logging.getLogger(__name__)
KEEP_WAIT = 10.0  # seconds


class LogService:
    def __init__(self, service: SandboxService) -> None:
        self.svc = service
        self._keeper: LogKeeper | None = None
        service.before_terminate.append(self.keep)
        service.before_suspend.append(self.keep_suspended)

    @property
    def keeper(self) -> LogKeeper:
        if self._keeper is None:  # made on first use: an app may be built without a manager
            self._keeper = LogKeeper(self.svc.manager.settings.data_dir / "logs")
        return self._keeper

    async def _fetch(self, rec: SandboxRecord) -> list[LogLine] | None:
        if rec.status != Status.RUNNING:
            return None
        try:  # bounded: a hung agent must not hold up a delete or a suspend for long
            lines, _ = await asyncio.wait_for(self.svc.logs(rec), KEEP_WAIT)
            return lines
        except asyncio.TimeoutError:
            log.warning("sandbox %s: its output could not be kept (agent too slow)", rec.id)
            return None

    async def keep(self, rec: SandboxRecord) -> None:
        """Before the server ends a sandbox: append what its agent holds."""
        if (lines := await self._fetch(rec)) is not None:
            await asyncio.to_thread(self.keeper.append, rec.id, lines)

    async def keep_suspended(self, rec: SandboxRecord) -> None:
        """Before a suspend: a copy to read while it sleeps (and if it ends asleep)."""
        if (lines := await self._fetch(rec)) is not None:
            await asyncio.to_thread(self.keeper.snapshot, rec.id, lines)

    async def lines(self, rec: SandboxRecord) -> tuple[list[LogLine], bool]:
        """(lines, whether older ones were left out)."""
        asleep = rec.status in (Status.SUSPENDED, Status.SUSPENDING)
        if (rec.status.is_final or asleep) and self.keeper.has(rec.id):
            return self.keeper.read(rec.id), False
        return await self.svc.logs(rec)
