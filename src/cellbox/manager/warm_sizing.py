"""How many pre-booted sandboxes a warm pool should hold: sized from observed demand.

Why: a fixed ``CELLBOX_WARM_POOL=2`` served a burst of 100 creates with 2 warm and 98
cold sandboxes (p95 ~11 s on this 2-core host); a pool of 100 served it at ~2.4 s, but
holding 100 idle sandboxes all day costs memory nobody asked for. So the pool follows
demand: it grows to the largest number of creates seen within ``burst_s`` during the
last ``memory_s`` (times ``headroom``), never below ``floor`` nor above what
``budget_mb`` of memory holds at ``per_sandbox_mb`` each, and falls back to ``floor``
once no such burst has been seen for ``memory_s`` (an idle pool gives its memory back).

Pure policy: no asyncio, no I/O, a clock passed in, so it is unit-tested with a fake
clock (tests/unit/test_warm_sizing.py). ``warm.WarmPool`` asks it two things: record a
create it could have served (``observe``), and the size to keep (``target``).
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def host_memory_mb() -> int:
    """MemTotal in MiB (the budget's default is a share of it)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) >> 10
    return 0


@dataclass(frozen=True)
class SizingPolicy:
    floor: int = 2  # always kept (CELLBOX_WARM_POOL: the fixed size before this module)
    budget_mb: int = 0  # memory the idle pool may hold; 0 = a quarter of the host's
    # Cost of one idle warm sandbox: the agent's ~9.5 MiB anonymous memory, its share of
    # page cache (the prefaulted node/python files are per snapshot on btrfs) and kernel
    # objects (netns, veth, cgroups); a round upper figure, see bench/density.py.
    per_sandbox_mb: int = 32
    burst_s: float = 10.0  # creates this close together count as one burst's demand
    memory_s: float = 600.0  # how long a burst keeps the pool large
    headroom: float = 1.2  # keep this much more than the largest burst seen
    cap: int = 0  # a hard ceiling besides the budget (0: none)

    @classmethod
    def from_env(cls, floor: int, cap: int = 0) -> "SizingPolicy":
        return cls(floor=floor, cap=cap, budget_mb=int(_env("CELLBOX_WARM_BUDGET_MB", "0")),
                   per_sandbox_mb=int(_env("CELLBOX_WARM_SANDBOX_MB", "32")),
                   memory_s=float(_env("CELLBOX_WARM_MEMORY_S", "600")))

    def ceiling(self) -> int:
        budget = self.budget_mb or host_memory_mb() // 4
        most = budget // max(1, self.per_sandbox_mb)
        return max(self.floor, min(most, self.cap) if self.cap else most)


class WarmSizer:
    """Demand-driven size of one warm pool (one per image)."""

    def __init__(self, policy: SizingPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._ceiling = policy.ceiling()
        self._creates: deque[float] = deque()  # times of creates within the current burst window
        # (time, size) of recent bursts' peaks, largest first after pruning: the demand memory.
        self._peaks: deque[tuple[float, int]] = deque()

    def observe(self) -> None:
        """A create the pool could have served (warm or not) happened now."""
        now = self.clock()
        self._creates.append(now)
        while self._creates and self._creates[0] <= now - self.policy.burst_s:
            self._creates.popleft()
        burst = len(self._creates)
        # Keep a monotone deque: a new peak evicts older, smaller ones (they would expire first).
        while self._peaks and self._peaks[-1][1] <= burst:
            self._peaks.pop()
        self._peaks.append((now, burst))

    def target(self) -> int:
        """How many warm sandboxes to keep now."""
        now = self.clock()
        while self._peaks and self._peaks[0][0] <= now - self.policy.memory_s:
            self._peaks.popleft()
        peak = self._peaks[0][1] if self._peaks else 0
        want = math.ceil(peak * self.policy.headroom)
        return max(self.policy.floor, min(self._ceiling, want))


def sizer_for(floor: int, cap: int = 0) -> WarmSizer | None:
    """The sizer for a pool whose fixed size was ``floor``; None when
    ``CELLBOX_WARM_AUTOSIZE=0`` (the fixed size, as before). The budget is per pool:
    a named image's pool passes ``cap`` (its size limit), so one tenant's burst of its
    own image cannot make the host hold more than that of it."""
    if _env("CELLBOX_WARM_AUTOSIZE", "1") != "1":
        return None
    return WarmSizer(SizingPolicy.from_env(floor, cap))
