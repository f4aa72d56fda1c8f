"""The continuous log collector: every running sandbox's output, written to its log
file on the host as it is printed, so a sandbox that crashes, is OOM-killed or killed
from outside keeps what its processes printed up to the end.

How: one follower task per running sandbox long-polls its agent's journal
(``GET /api/v1/logs?after=SEQ&wait_ms=20000``, ``agent/journal.py``) and appends each
batch through ``LogKeeper`` (the size cap and rotation). The cursor is the journal's
sequence number, stored with each line, so a server restart or a suspend/resume goes
on where it stopped. A scan every ``SCAN_S`` starts followers for sandboxes that
became running by any path (create, claim, resume, restore, copy, a server restart).
An agent without the route (an image pre-booted before it) answers 404: that sandbox
keeps the old behaviour (its output is saved when the server ends it).

Untrusted input: the journal is the tenant's PID 1 talking. An answer is one bounded,
authenticated agent call (``max_bytes``); each entry is type-checked and its body cut
to ``MAX_BODY``; the keeper writes JSON lines into ``<data>/logs/<sandbox id>/`` only
(the ID is checked, the file opened ``O_NOFOLLOW``), never past its cap. What the host
spends is bounded per answer; a sandbox that prints without pause makes the host write
at the rate it prints, into those two files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from ..manager import agent_client
from ..manager.log_levels import WARN, level_of
from ..manager.logs import LogLine
from ..manager.records import SandboxRecord, Status
from ..manager.warm import WARM_NAMESPACE

if TYPE_CHECKING:
    from ..manager.service import SandboxService
    from .keeper import LogKeeper

log = logging.getLogger(__name__)
SCAN_S = 2.0
WAIT_MS = 20_000
ANSWER_BYTES = 1 << 20
MAX_BODY = 64 << 10
FINAL_WAIT = 5.0


@dataclass
class _Follower:
    sandbox_id: str
    cursor: int
    lock_fd: int | None = None  # the keeper's flock: this process collects the sandbox
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def parse(doc: Any, cursor: int) -> tuple[list[LogLine], list[int], int]:
    """(lines, their sequence numbers, the next cursor) of one journal answer; entries
    that are not well-formed are skipped, a gap the journal dropped is one warn line."""
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise agent_client.AgentError("the sandbox's agent sent a journal answer of the wrong shape")
    nxt = doc.get("next")
    lines: list[LogLine] = []
    seqs: list[int] = []
    first = doc.get("first")
    if isinstance(first, int) and first > cursor:
        lines.append(LogLine(0, f"[cellbox: {first - cursor} lines were dropped before they were collected]",
                             None, "cellbox", WARN))
        seqs.append(first - 1)
    for e in doc["entries"]:
        if not isinstance(e, dict):
            continue
        seq, pid, ts, body, stream = e.get("s"), e.get("p"), e.get("t"), e.get("l"), e.get("o")
        if not (_int(seq) and seq >= cursor and _int(pid) and _int(ts) and isinstance(body, str)):
            continue
        command = e.get("c") if isinstance(e.get("c"), str) else None
        body = body[:MAX_BODY]
        lines.append(LogLine(ts, body, pid, command[:256] if command else None,
                             level_of(body, stream if stream in ("stdout", "stderr") else None)))
        seqs.append(seq)
    if not _int(nxt) or nxt < 0:
        raise agent_client.AgentError("the sandbox's agent sent no journal cursor")
    return lines, seqs, nxt


def _int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class Collector:
    def __init__(self, service: SandboxService, keeper: LogKeeper) -> None:
        self.svc = service
        self.keeper = keeper
        self.followers: dict[str, _Follower] = {}
        self.unsupported: set[str] = set()  # agents without the journal route
        self.ended: set[str] = set()  # sandboxes the server is ending
        self._scan: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._scan = asyncio.ensure_future(self._scan_loop())

    async def close(self) -> None:
        tasks = [t for t in [self._scan, *(f.task for f in self.followers.values())] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _scan_loop(self) -> None:
        while True:
            try:
                live = self.svc.manager.store.list(live_only=True)
                for rec in live:
                    if (rec.status == Status.RUNNING and rec.ip and rec.namespace != WARM_NAMESPACE
                            and rec.id not in self.followers and rec.id not in self.unsupported
                            and rec.id not in self.ended):
                        self._follow(rec.id)
                ids = {rec.id for rec in live}
                self.ended &= ids
                self.unsupported &= ids
            except Exception:  # noqa: BLE001 - the scan must outlive one bad pass
                log.exception("log collector: scan failed")
            await asyncio.sleep(SCAN_S)

    def _claim(self, sandbox_id: str) -> _Follower | None:
        """A follower holding the sandbox's lock, its cursor after the newest kept line;
        None if another server process collects it."""
        fd = self.keeper.lock(sandbox_id)
        if fd is None:
            return None
        last = self.keeper.last_seq(sandbox_id)
        return _Follower(sandbox_id, 0 if last is None else last + 1, fd)

    def _follow(self, sandbox_id: str) -> None:
        f = self._claim(sandbox_id)
        if f is not None:
            self.followers[sandbox_id] = f
            f.task = asyncio.ensure_future(self._run(f))

    async def _fetch(self, rec: SandboxRecord, cursor: int, wait_ms: int) -> tuple[int, Any]:
        assert rec.ip is not None
        path = f"/api/v1/logs?after={cursor}&wait_ms={wait_ms}&max_bytes={ANSWER_BYTES}"
        status, body = await self.svc.manager.agent.call(
            rec.ip, self.svc.manager.settings.agent_port, agent_client.key_of(rec), "GET", path,
            timeout=wait_ms / 1000 + 10, max_bytes=8 * ANSWER_BYTES)
        return status, (await asyncio.to_thread(agent_client.parse_json, body) if status == 200 else None)

    async def _store(self, f: _Follower, doc: Any) -> None:
        async with f.lock:
            lines, seqs, nxt = parse(doc, f.cursor)
            if nxt < f.cursor:  # a journal that restarted: read it from its start
                f.cursor = 0
                return
            if lines:
                await asyncio.to_thread(self.keeper.append, f.sandbox_id, lines, seqs)
            f.cursor = max(nxt, f.cursor)

    async def _run(self, f: _Follower) -> None:
        failures = 0
        try:
            while (rec := self.svc.manager.store.get(f.sandbox_id)) is not None and rec.status == Status.RUNNING:
                try:
                    status, doc = await self._fetch(rec, f.cursor, WAIT_MS)
                    if status == 404:
                        self.unsupported.add(f.sandbox_id)
                        return
                    if status != 200:
                        raise agent_client.AgentError(f"the sandbox's agent answered {status} to its journal")
                    await asyncio.shield(self._store(f, doc))
                    failures = 0
                except agent_client.AgentError as exc:
                    failures += 1
                    if failures in (3, 30):
                        log.info("sandbox %s: log collector: %s", f.sandbox_id, exc)
                    await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))
        finally:
            if self.followers.get(f.sandbox_id) is f:
                del self.followers[f.sandbox_id]
                f.release()

    async def finish(self, rec: SandboxRecord, *, final: bool) -> bool:
        """Before the server ends (``final``) or suspends a sandbox: stop its follower and
        collect the rest, also when no follower runs now (one ran before a suspend, or the
        scan has not come yet). True if the journal holds its log (nothing else should
        append it); False for an agent without the journal (the caller saves the old way)."""
        f = self.followers.pop(rec.id, None)
        if final:
            self.ended.add(rec.id)  # never followed again, even while its record still says running
        if f is not None and f.task is not None:
            f.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await f.task
        if rec.id in self.unsupported:
            if f is not None:
                f.release()
            return False
        if f is None and (f := self._claim(rec.id)) is None:
            return True  # another server process collects it (and has, continuously)
        try:
            return await self._drain(rec, f)
        finally:
            f.release()

    async def _drain(self, rec: SandboxRecord, f: _Follower) -> bool:
        if rec.status != Status.RUNNING or not rec.ip:
            return True
        try:  # what was printed since the last answer
            async with asyncio.timeout(FINAL_WAIT):
                while True:
                    status, doc = await self._fetch(rec, f.cursor, 0)
                    if status == 404:
                        self.unsupported.add(rec.id)
                        return False
                    if status != 200 or not doc.get("entries"):
                        break
                    await self._store(f, doc)
        except (agent_client.AgentError, TimeoutError, AttributeError):
            log.warning("sandbox %s: the last of its output could not be collected", rec.id)
        return True
