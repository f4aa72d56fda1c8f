"""Logs of a sandbox, live or kept: what the API's logs routes read.

A running sandbox's lines come from its agent (``SandboxService.logs``, bounded); an
ended or suspended one's from its log file on the host (``keeper.py``), written
continuously by the collector (``collector.py``) while it ran, so a sandbox that
crashed or was killed keeps its output too. For an agent without the collector's
route (an old pre-booted image) the service's ``before_terminate`` hook saves what
the agent holds at the end, and ``before_suspend`` a copy for while it sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import os

from ..manager.records import SandboxRecord, Status
from ..manager.logs import LogLine
from ..manager.service import SandboxService
from .collector import Collector
from .keeper import LogKeeper

log = logging.getLogger(__name__)
KEEP_WAIT = 10.0  # seconds
COLLECT = os.environ.get("CELLBOX_LOG_COLLECTOR", "1") != "0"


class LogService:
    def __init__(self, service: SandboxService) -> None:
        self.svc = service
        self._keeper: LogKeeper | None = None
        self.collector: Collector | None = None
        service.before_terminate.append(self.keep)
        service.before_suspend.append(self.keep_suspended)
        try:  # a server: collect continuously (an app built for a test without a loop does not)
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if getattr(service, "manager", None) is not None and COLLECT:
            self.collector = Collector(service, self.keeper)
            self.collector.start()
            service.on_close.append(self.collector.close)

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
        """Before the server ends a sandbox: the collector's last lines, or (no collector
        for it) append what its agent holds."""
        if self.collector is not None and await self.collector.finish(rec, final=True):
            return
        if (lines := await self._fetch(rec)) is not None:
            await asyncio.to_thread(self.keeper.append, rec.id, lines)

    async def keep_suspended(self, rec: SandboxRecord) -> None:
        """Before a suspend: a copy to read while it sleeps (and if it ends asleep)."""
        if self.collector is not None and await self.collector.finish(rec, final=False):
            return  # its file is complete; the follower starts again after the resume
        if (lines := await self._fetch(rec)) is not None:
            await asyncio.to_thread(self.keeper.snapshot, rec.id, lines)

    async def lines(self, rec: SandboxRecord) -> tuple[list[LogLine], bool]:
        """(lines, whether older ones were left out)."""
        asleep = rec.status in (Status.SUSPENDED, Status.SUSPENDING)
        if (rec.status.is_final or asleep) and self.keeper.has(rec.id):
            return self.keeper.read(rec.id), False
        return await self.svc.logs(rec)
