"""Background tasks that outlive the request that started them, in one kind of set.

Why: the bookkeeping (keep a reference so the task is not garbage-collected, drop it
when done, log a failure nobody awaited, wait for the rest at shutdown) was written
five times, and one copy logged nothing. ``TaskSet`` is that bookkeeping, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import CellboxError

log = logging.getLogger(__name__)
T = TypeVar("T")


class TaskSet:
    def __init__(self, what: str) -> None:
        self.what = what  # for the log: "image job", "state change", ...
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, CellboxError):
            log.warning("%s failed: %s", self.what, exc)
        else:
            log.error("%s failed", self.what, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def pending(self) -> list[asyncio.Task[Any]]:
        return list(self._tasks)

    async def settle(self) -> None:
        """Wait until every task (and any they spawn meanwhile) is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, timeout: float) -> None:
        """Let the tasks finish for ``timeout`` s, then cancel the rest (bounded wait)."""
        if not self._tasks:
            return
        log.info("waiting for %d %s(s)", len(self._tasks), self.what)
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
