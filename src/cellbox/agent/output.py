"""Line-oriented, bounded capture of one process's stdout/stderr.

Why lines: the daemon API exposes output as lines (``{"line", "timestamp",
"stream"}`` events and ``{"lines": [...]}`` snapshots), so bytes are split at
``\\n`` as they arrive; a trailing partial line is kept until more data or EOF.
Bytes are decoded as UTF-8 with ``errors="replace"`` so a binary-spewing
process cannot produce JSON that strict clients (serde) reject.

Why bounded: an agent that keeps every byte a runaway ``yes`` prints would be
OOM-killed itself.  Each log keeps the newest ``max_lines`` lines and at most
``max_bytes`` (what the lines really cost in memory, see ``budget.py``; oldest lines
are dropped first; ``dropped`` counts them), and all logs together stay within one
``OutputBudget`` sized from the sandbox's memory limit
and a single "line" without a newline is force-split at ``MAX_LINE_BYTES``.

Why pull-based followers: instead of a queue per subscriber (which a slow
client could grow without bound) every line gets a sequence number and a
follower keeps a cursor; ``wait()`` parks it on one shared future that the next
``append``/``finish`` resolves.  A follower that falls behind the retention
window just skips to the oldest retained line.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .budget import line_cost

if TYPE_CHECKING:
    from .budget import OutputBudget

STDOUT = "stdout"
STDERR = "stderr"
BOTH = frozenset((STDOUT, STDERR))

MAX_LINE_BYTES = 64 * 1024


class OutputLine:
    """One captured line; ``timestamp`` is epoch ms, ``stream`` stdout|stderr."""

    __slots__ = ("seq", "stream", "timestamp", "line")

    def __init__(self, seq: int, stream: str, timestamp: int, line: str) -> None:
        self.seq = seq
        self.stream = stream
        self.timestamp = timestamp
        self.line = line


class LineSplitter:
    """Turns a byte stream into decoded lines, keeping the partial tail."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[str]:
        buf = self._partial
        buf += data
        lines: list[str] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            end = nl - 1 if nl > start and buf[nl - 1] == 0x0D else nl  # CRLF -> LF
            lines.append(bytes(buf[start:end]).decode("utf-8", "replace"))
            start = nl + 1
        if start:
            del buf[:start]
        while len(buf) > MAX_LINE_BYTES:
            cut = _utf8_boundary(buf, MAX_LINE_BYTES)
            lines.append(bytes(buf[:cut]).decode("utf-8", "replace"))
            del buf[:cut]
        return lines

    def flush(self) -> list[str]:
        """Return the unterminated tail (if any) as a final line."""
        if not self._partial:
            return []
        line = bytes(self._partial).decode("utf-8", "replace")
        self._partial.clear()
        return [line]


def _utf8_boundary(buf: bytearray, limit: int) -> int:
    """Largest cut <= limit that does not split a UTF-8 sequence."""
    cut = limit
    while cut > limit - 4 and cut > 0 and (buf[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > 0 else limit


class OutputLog:
    """Sequence-numbered ring of ``OutputLine`` with async "wait for more"."""

    def __init__(self, max_lines: int, max_bytes: int, budget: "OutputBudget | None" = None) -> None:
        self._max_lines = max(1, max_lines)
        self._max_bytes = max(1, budget.per_log(max_bytes) if budget is not None else max_bytes)
        self._budget = budget
        self._lines: list[OutputLine] = []
        self._head = 0  # index in _lines of the oldest retained entry
        self.first_seq = 0
        self.next_seq = 0
        self.bytes = 0
        self.dropped = 0
        self.finished = False
        self._waiter: asyncio.Future[None] | None = None
        if budget is not None:
            budget.register(self)

    @property
    def truncated(self) -> bool:
        """True once any line was dropped to stay within the limits."""
        return self.dropped > 0

    def __len__(self) -> int:
        return self.next_seq - self.first_seq

    def append(self, stream: str, line: str, timestamp: int) -> None:
        self._lines.append(OutputLine(self.next_seq, stream, timestamp, line))
        self.next_seq += 1
        cost = line_cost(line)
        self.bytes += cost
        freed = 0
        while len(self) > 1 and (len(self) > self._max_lines or self.bytes > self._max_bytes):
            freed += self._drop_oldest()
        if self._budget is not None:
            self._budget.release(freed)
            self._budget.charge(cost)  # may trim this log (or a bigger one) further
        self._compact()
        self._wake()

    def trim(self, nbytes: int) -> int:
        """Drop oldest lines until ``nbytes`` are freed (the budget asks); returns bytes freed."""
        freed = 0
        while freed < nbytes and len(self) > 0:
            freed += self._drop_oldest()
        self._compact()
        return freed

    def _drop_oldest(self) -> int:
        old = self._lines[self._head]
        self._lines[self._head] = None  # type: ignore[call-overload]  # free now
        self._head += 1
        self.first_seq += 1
        cost = line_cost(old.line)
        self.bytes -= cost
        self.dropped += 1
        return cost

    def _compact(self) -> None:
        if self._head > 4096 and self._head * 2 > len(self._lines):
            del self._lines[: self._head]
            self._head = 0

    def finish(self) -> None:
        """Mark the stream as complete for followers (the process is done)."""
        self.finished = True
        self._wake()

    def reopen(self) -> None:
        """Undo ``finish`` (a stopped supervised process was restarted)."""
        self.finished = False

    def since(self, seq: int) -> tuple[list[OutputLine], int]:
        """Lines with sequence >= ``seq`` (clamped to what is retained) and the next cursor."""
        if seq < self.first_seq:
            seq = self.first_seq
        start = self._head + (seq - self.first_seq)
        return self._lines[start:], self.next_seq

    def lines(self, streams: frozenset[str] = BOTH) -> list[str]:
        entries, _ = self.since(0)
        if streams == BOTH:
            return [e.line for e in entries]
        return [e.line for e in entries if e.stream in streams]

    async def wait(self, seq: int, timeout: float) -> bool:
        """Wait until a line with sequence >= ``seq`` exists or the log finishes.

        Returns False on timeout (callers send a keep-alive then).  The shared
        future is shielded so one follower's timeout cannot cancel it for others.
        """
        if self.next_seq > seq or self.finished:
            return True
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        except TimeoutError:
            return False
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
