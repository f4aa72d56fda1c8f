"""Requests in flight through this proxy, per sandbox: what a live migration waits for.

A request the agent is answering when the sandbox freezes is stuck until the frozen
copy goes away (after the target fetched every page): the client sees it cut, seconds
later, and retries. So the source node marks the sandbox ``migrating`` (the control
plane's proxies hold new requests), waits here until the short requests already
forwarded have been answered, and only then freezes. A stream that never ends (an SSE
follow, a PTY, a WebSocket) is not waited for beyond the bound: it is cut, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator


class InFlight:
    """Counts of open request/response cycles by sandbox ID; ``idle`` waits for zero."""

    __slots__ = ("_counts", "_changed")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._changed = asyncio.Event()

    def enter(self, sandbox_id: str) -> None:
        self._counts[sandbox_id] = self._counts.get(sandbox_id, 0) + 1

    def leave(self, sandbox_id: str) -> None:
        left = self._counts.get(sandbox_id, 0) - 1
        if left > 0:
            self._counts[sandbox_id] = left
        else:
            self._counts.pop(sandbox_id, None)
            self._changed.set()

    @contextlib.contextmanager
    def open(self, sandbox_id: str) -> Iterator[None]:
        """Counted while the block runs (one request/response cycle)."""
        self.enter(sandbox_id)
        try:
            yield
        finally:
            self.leave(sandbox_id)

    def count(self, sandbox_id: str) -> int:
        return self._counts.get(sandbox_id, 0)

    async def idle(self, sandbox_id: str, timeout: float) -> int:
        """Until no request of ``sandbox_id`` is in flight or ``timeout`` passed: how
        many still are (0: drained)."""
        deadline = time.monotonic() + timeout
        while self.count(sandbox_id) and (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                break
        return self.count(sandbox_id)
