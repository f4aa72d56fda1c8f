"""One output-retention budget for the whole agent, sized from the sandbox's memory limit.

Why: each process's log is bounded (``OutputLog``), but seven chatty processes in a
256 MB sandbox each kept their 16 MiB of text -- and a ``str`` of 4-byte characters
costs 4 bytes per character -- so the agent (PID 1) grew past the limit and the kernel
OOM-killed it, taking the whole sandbox with it. So every log also charges one shared
budget, in bytes the interpreter really spends (``sys.getsizeof`` of each line plus its
bookkeeping), and when the sum goes over, the largest logs lose their oldest lines
first (each log counts what it dropped, and the output API reports it as truncated).

The budget is a fraction of the cgroup's memory limit, read from inside the sandbox
(the cgroup namespace shows the sandbox's own cgroup at /sys/fs/cgroup), re-read when a
process starts because a pre-booted sandbox gets its limits only when it is claimed.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .output import OutputLog

# cgroup v1 (this host's hybrid layout) then v2; "max" or a huge number means no limit.
LIMIT_FILES = ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max")
# 1/8 of the limit: a GET of a process's whole output JSON-encodes it, which briefly
# costs ~3x what is retained, and the tenant's own processes need the rest.
LIMIT_FRACTION = 8
DEFAULT_TOTAL = 256 << 20  # no readable limit (agent run on a host): as before
MIN_TOTAL = 1 << 20
# Per retained line besides the str itself: the OutputLine (4 slots), its seq and
# timestamp ints and the list slot, measured with sys.getsizeof on CPython 3.11.
LINE_OVERHEAD = 160
# When over budget, trim to this fraction of it so trimming is not paid per line.
HYSTERESIS = 0.9


def line_cost(line: str) -> int:
    """Bytes one retained line really costs (a 4-byte-per-char str counts 4x)."""
    return sys.getsizeof(line) + LINE_OVERHEAD


def read_memory_limit(paths: tuple[str, ...] = LIMIT_FILES) -> int | None:
    """The sandbox's memory limit in bytes, or None when there is none to read."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                text = f.read(64).strip()
        except OSError:
            continue
        if text == b"max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if value < (1 << 60) else None  # v1's "unlimited" is ~2**63
    return None


def total_for(limit: int | None, cap: int) -> int:
    """The agent-wide budget for a memory ``limit`` and the configured ``cap``."""
    if limit is None:
        return max(MIN_TOTAL, cap)
    return max(MIN_TOTAL, min(cap, limit // LIMIT_FRACTION))


class OutputBudget:
    """Bytes retained by every live ``OutputLog``; trims the largest when over ``total``.

    ``used`` is kept incrementally and re-synced from the live logs (a ``WeakSet``, so a
    forgotten process's log leaves the count when it is collected) each time it goes
    over, so a stale count costs one re-sum, never a wrong trim.
    """

    def __init__(self, cap: int = DEFAULT_TOTAL, limit_files: tuple[str, ...] = LIMIT_FILES) -> None:
        self.cap = cap
        self._files = limit_files
        self.total = cap
        self.used = 0
        self._logs: "weakref.WeakSet[OutputLog]" = weakref.WeakSet()
        self.refresh()

    def refresh(self) -> None:
        """Re-read the memory limit (a claimed warm sandbox has just been given one)."""
        self.total = total_for(read_memory_limit(self._files), self.cap)

    def per_log(self, configured: int) -> int:
        """One log's own cap: never more than the whole budget."""
        return max(1, min(configured, self.total))

    def register(self, log: "OutputLog") -> None:
        self._logs.add(log)
        self.used += log.bytes

    def charge(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.total:
            self._reclaim()

    def release(self, nbytes: int) -> None:
        self.used -= nbytes

    def _reclaim(self) -> None:
        logs = list(self._logs)
        self.used = sum(log.bytes for log in logs)
        target = int(self.total * HYSTERESIS)
        while self.used > self.total or (self.used > target and logs):
            victim = max(logs, key=lambda log: log.bytes, default=None)
            if victim is None or victim.bytes == 0:
                return
            # Trim the largest down toward the second largest (at least 64 KiB at a
            # time), so the chatty log pays first and quiet ones keep their lines.
            second = max((log.bytes for log in logs if log is not victim), default=0)
            need = self.used - target
            freed = victim.trim(min(need, max(victim.bytes - second, 64 << 10)))
            if freed == 0:
                return
            self.used -= freed
