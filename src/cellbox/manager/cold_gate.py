"""Admission for cold creates: a few at once, the rest queued in order, refused when late.

Why: a burst of 100 creates that found the warm pool nearly empty started ~98 cold
creates at once on this 2-core host. Each one's agent then had ~1/98 of the CPU, many
did not answer within the 15 s start timeout, and the first burst ended with 31-45 %
success at p95 30-40 s (docs/ARCHITECTURE.md, "The pool sizes itself"). A cold create
costs ~150 ms of CPU whatever the concurrency; started a few at a time each one is
done in a fraction of a second and the queue drains at the host's real rate.

So: at most ``slots`` cold creates in flight (default twice the CPUs: a create waits
on runc, btrfs and its agent part of the time), the rest wait first-come first-served.
A waiter is woken early when its warm pool has a ready sandbox (``wake``), and takes
that instead of booting one. A create is refused with ``Overloaded`` (503 +
``Retry-After``) *before anything is made* when the queue is full, when its expected
wait (the queue ahead of it ÷ slots × the recent cold create time) passes
``max_wait``, or when it has waited ``max_wait`` without a slot: a clear answer a
client can retry, never a 500 or a sandbox whose agent timed out half-made.

No I/O and no manager imports: tested with plain asyncio (tests/unit/manager/test_cold_gate.py).
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import time
from collections.abc import Callable
from typing import Any

from ..errors import CellboxError

EWMA_WEIGHT = 0.2  # weight of the newest cold create's duration in the running estimate
FIRST_GUESS_S = 0.5  # the estimate before any cold create finished (quiet host: ~0.15 s)


class Overloaded(CellboxError):
    """Too many cold creates queued on this host (503 + ``Retry-After``).

    503, not a timeout or a 500: the request was refused before anything was made, and
    a later try is expected to succeed (the Tensorlake SDK retries 503; ours raises
    ``SandboxUnavailable`` with the code ``OVERLOADED``)."""

    status = 503
    code = "OVERLOADED"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.headers = {"Retry-After": str(self.retry_after)}


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


class ColdGate:
    """Bounds the cold creates in flight on this host; see the module docstring."""

    def __init__(self, slots: int | None = None, *, max_queue: int | None = None, max_wait: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        cpus = os.cpu_count() or 1
        self.slots = max(1, slots if slots is not None else int(_env_number("CELLBOX_COLD_SLOTS", 2 * cpus)))
        self.max_queue = max_queue if max_queue is not None else int(_env_number("CELLBOX_COLD_QUEUE", 1000))
        self.max_wait = max_wait if max_wait is not None else _env_number("CELLBOX_COLD_QUEUE_WAIT_S", 30.0)
        self.clock = clock
        self.in_flight = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self.create_s = FIRST_GUESS_S  # running estimate of one cold create's duration
        self.refused = 0  # creates refused since start (the bench and /metrics read it)

    @property
    def queued(self) -> int:
        return sum(1 for f in self._queue if not f.done())

    def busy(self) -> bool:
        """Cold creates are in flight or queued: a burst is being served (a warm pool's
        growth waits for the end of it rather than compete with it)."""
        return self.in_flight > 0 or self.queued > 0

    def expected_wait(self, ahead: int | None = None) -> float:
        """Seconds a newcomer behind ``ahead`` queued creates would wait for a slot."""
        ahead = self.queued if ahead is None else ahead
        if self.in_flight < self.slots and ahead == 0:
            return 0.0
        return (ahead + 1) / self.slots * self.create_s

    def enter(self) -> "Ticket":
        """A place for one cold create: a slot now, or a place in the queue. Raises
        ``Overloaded`` (nothing made yet) when the queue is full or too slow."""
        if self.in_flight < self.slots and not self.queued:
            self.in_flight += 1
            return Ticket(self, None, self.clock() + self.max_wait)
        ahead = self.queued
        wait = self.expected_wait(ahead)
        if ahead >= self.max_queue or wait > self.max_wait:
            self.refused += 1
            raise Overloaded(f"this host is busy starting sandboxes: {self.in_flight} starting and {ahead} "
                             f"waiting (about {wait:.0f} s); retry later", retry_after=math.ceil(wait))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        return Ticket(self, fut, self.clock() + self.max_wait)

    def _release(self) -> None:
        """A slot is free: hand it to the first live waiter, else count it free."""
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes on: in_flight stays the same
                return
        self.in_flight -= 1

    def _learn(self, seconds: float) -> None:
        self.create_s = (1 - EWMA_WEIGHT) * self.create_s + EWMA_WEIGHT * seconds


class Ticket:
    """One create's claim on the gate: ``wait`` for the slot, ``done`` when the cold
    create ended (its duration teaches the estimate), ``close`` always (in ``finally``)."""

    def __init__(self, gate: ColdGate, fut: asyncio.Future[None] | None, deadline: float) -> None:
        self._gate = gate
        self._fut = fut  # None: the slot was free at once
        self._deadline = deadline
        self._holds = fut is None
        self._closed = False

    @property
    def holds_slot(self) -> bool:
        return self._holds

    async def wait(self, wake: asyncio.Event | None = None) -> bool:
        """True once this ticket holds a slot; False if ``wake`` was set first (still
        queued: look at the warm pool again, then wait again). ``Overloaded`` when the
        deadline passes without a slot."""
        if self._holds:
            return True
        assert self._fut is not None
        while (left := self._deadline - self._gate.clock()) > 0 and not self._fut.done():
            waker = asyncio.ensure_future(wake.wait()) if wake is not None else None
            waits: set[asyncio.Future[Any]] = {self._fut} if waker is None else {self._fut, waker}
            try:
                done, _ = await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if waker is not None:
                    waker.cancel()
            if self._fut.done():
                break
            # Woken: a ready sandbox was there when the event fired (another waiter may
            # have claimed it and cleared the event since; the caller looks and comes back).
            if waker is not None and waker in done:
                return False
        if self._fut.done():
            self._holds = True
            return True
        self._gate.refused += 1
        raise Overloaded(f"this host is busy starting sandboxes: no start slot within {self._gate.max_wait:.0f} s; "
                         "retry later", retry_after=math.ceil(self._gate.expected_wait()))

    def done(self, seconds: float) -> None:
        """The cold create this slot was for took ``seconds`` (success only)."""
        self._gate._learn(seconds)

    def close(self) -> None:
        """Give the slot back, or leave the queue (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._fut is not None and not self._fut.done():
            self._fut.cancel()  # a cancelled future is skipped by ``_release``
            return
        self._gate._release()  # held, or handed over while we were leaving
