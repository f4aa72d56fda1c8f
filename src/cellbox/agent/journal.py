"""One ordered journal of every process's output lines, for the host's log collector.

Why: a sandbox's output lived only in its agent's memory, so a sandbox that crashed
or was killed from outside lost it (only what the server fetched at a delete it made
itself was kept). The host now follows this journal continuously
(``cellbox/logs/collector.py``) and writes it to the sandbox's log file on the host,
so what was printed up to the crash is kept.

Why a long poll and not a stream: ``GET /api/v1/logs?after=SEQ&wait_ms=N`` answers at
once when lines after ``SEQ`` exist, else when one arrives or ``wait_ms`` passes. An
idle sandbox costs the host one request per ``wait_ms`` (20 s), a busy one a request
per batch; each answer is an ordinary bounded, authenticated agent call, and the
cursor makes a reconnect (server restart, suspend/resume) lose and repeat nothing.

Bounded: the journal holds at most ``MAX_LINES`` entries and ``MAX_BYTES`` of text
(references to the same strings the per-process logs hold, so it costs little while
those keep them); the host is normally a few milliseconds behind. An answer holds at
most ``limit`` entries and ``max_bytes`` of text; ``first`` > ``after`` tells the
host how many lines it missed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .budget import line_cost

MAX_LINES = 20_000
MAX_BYTES = 4 << 20


class Journal:
    __slots__ = ("_entries", "first_seq", "next_seq", "bytes", "_waiter")

    def __init__(self) -> None:
        self._entries: list[tuple[int, str | None, str, str, int, str]] = []  # pid, name, command, stream, ts, line
        self.first_seq = 0
        self.next_seq = 0
        self.bytes = 0
        self._waiter: asyncio.Future[None] | None = None

    def add(self, pid: int, name: str | None, command: str, stream: str, timestamp: int, line: str) -> None:
        self._entries.append((pid, name, command, stream, timestamp, line))
        self.next_seq += 1
        self.bytes += line_cost(line)
        if len(self._entries) > MAX_LINES or self.bytes > MAX_BYTES:
            drop = max(len(self._entries) - MAX_LINES, len(self._entries) // 8, 1)
            self.bytes -= sum(line_cost(e[5]) for e in self._entries[:drop])
            del self._entries[:drop]
            self.first_seq += drop
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def since(self, after: int, limit: int, max_bytes: int) -> list[dict[str, Any]]:
        start = max(after, self.first_seq) - self.first_seq
        out: list[dict[str, Any]] = []
        budget = max_bytes
        for i in range(start, min(len(self._entries), start + limit)):
            pid, name, command, stream, ts, line = self._entries[i]
            budget -= len(line) + 1
            if budget < 0 and out:
                break
            out.append({"s": self.first_seq + i, "p": pid, "n": name, "c": command, "o": stream, "t": ts, "l": line})
        return out

    async def wait(self, after: int, timeout: float) -> None:
        if self.next_seq > after or timeout <= 0:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        except TimeoutError:
            pass
