"""``GET /api/v1/logs``: the journal of every process's output (journal.py), long-polled
by the host's log collector (``cellbox/logs/collector.py``)."""

from __future__ import annotations

from typing import Any

from .errors import APIError
from .journal import Journal
from .server import Request, Response, json_response

MAX_WAIT_MS = 60_000
MAX_ANSWER_BYTES = 1 << 20


def _count(request: Request, key: str, default: int, maximum: int) -> int:
    raw = request.query(key)
    if raw is None:
        return default
    if not raw.isdigit():
        raise APIError(400, "INVALID_REQUEST", f"query parameter {key!r} must be a non-negative integer")
    return min(int(raw), maximum)


class JournalAPI:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def register(self, router: Any) -> None:
        router.add("GET", "/api/v1/logs", self.logs)

    async def logs(self, request: Request) -> Response:
        """``{"entries": [{s, p, n, o, t, l}], "next", "first"}`` after ``after``."""
        after = _count(request, "after", 0, 1 << 62)
        wait_ms = _count(request, "wait_ms", 0, MAX_WAIT_MS)
        limit = _count(request, "limit", 5000, 20_000)
        max_bytes = _count(request, "max_bytes", MAX_ANSWER_BYTES, 8 << 20)
        await self.journal.wait(after, wait_ms / 1000)
        j = self.journal
        entries = j.since(after, limit, max_bytes)
        nxt = entries[-1]["s"] + 1 if entries else max(after, j.first_seq) if after <= j.next_seq else j.next_seq
        return json_response({"entries": entries, "next": nxt, "first": j.first_seq, "end": j.next_seq})
