"""Tensorlake's log filters over a sandbox's lines (spec §2.9): ``level``,
``processId``, ``body``, ``head``/``tail`` and ``nextToken`` paging, and the
processes summary of ``GET …/processes`` (the log-processes route).

Levels: each line has one (``manager/log_levels.py``: a level word at its start,
else ``error`` for stderr and ``info`` for stdout; the runtime's lines by runc's own
level), and ``level`` selects by it.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest
from ..manager.log_levels import NAMES
from ..manager.logs import LogLine

LEVELS = NAMES
PAGE = 1000  # lines per answer without head


def parse_levels(values: list[str]) -> set[int]:
    out: set[int] = set()
    for v in values:
        for part in v.split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part.isdigit() and 1 <= int(part) <= 6:
                out.add(int(part))
            elif part in LEVELS:
                out.add(LEVELS[part])
            else:
                raise InvalidRequest(f"level: unknown level {part!r}; 1-6 or one of {', '.join(LEVELS)}")
    return out


def select(lines: list[LogLine], *, levels: set[int], process_ids: list[str], body: str | None,
           head: int | None, tail: int | None, token: str | None) -> tuple[list[tuple[int, LogLine]], str | None]:
    """The matching (index, line) pairs of one page, and the next page's token.

    Indexes are positions in the sandbox's whole log (stable UUIDs). The token is the
    index to go on from: lines only get appended, so a later page never skips one."""
    wanted = set(process_ids)
    picked = [(i, ln) for i, ln in enumerate(lines)
              if (not levels or ln.level in levels)
              and (not wanted or str(ln.pid) in wanted or (ln.pid is None and "init" in wanted))
              and (body is None or body.lower() in ln.body.lower())]
    if tail is not None:
        picked = picked[len(picked) - tail:] if tail else []
    start = 0
    if token:
        try:
            start = int(token)
        except ValueError:
            raise InvalidRequest("nextToken: not a token this server returned") from None
        picked = [p for p in picked if p[0] >= start]
    size = head if head is not None else PAGE
    page, rest = picked[:size], picked[size:]
    return page, (str(rest[0][0]) if rest else None)


def processes(lines: list[LogLine]) -> list[dict[str, Any]]:
    """One entry per process that printed something, in first-seen order."""
    seen: dict[str, dict[str, Any]] = {}
    for ln in lines:
        key = "init" if ln.pid is None else str(ln.pid)
        entry = seen.get(key)
        if entry is None:
            entry = seen[key] = {"processId": key, "processPid": "" if ln.pid is None else str(ln.pid),
                                 "processCommand": ln.command or "", "processManagedId": "",
                                 "processManagedName": "", "firstSeen": ln.timestamp,
                                 "lastSeen": ln.timestamp, "logCount": 0}
        entry["logCount"] += 1
        entry["lastSeen"] = max(entry["lastSeen"], ln.timestamp)
    return list(seen.values())
