"""Archived sandboxes (Tensorlake's ``archived-sandboxes``, issue 14 item 5).

A terminated or failed sandbox's record is kept, readable, for
``Settings.archive_retention_secs`` after it ended (``archived_at`` = its
``terminated_at``), then purged by the sweep (``manager/timeouts.py``) together with
whatever host state it left under the data dir (its kept logs). The listing reads
the same records as ``GET /sandboxes?status=terminated``; it exists because the SDK
asks for it under its own path and shape.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..errors import InvalidRequest, NotFound
from .records import SandboxRecord, now_ms
from .store import Store

log = logging.getLogger(__name__)
FINAL = ["terminated", "failed"]
PURGE_EVERY = 60  # sweeps (seconds) between purges


def archived_at(rec: SandboxRecord) -> int:
    return rec.terminated_at or rec.created_at


def get(store: Store, ref: str, namespace: str) -> SandboxRecord:
    rec = store.get(ref) or store.get_by_name(namespace, ref)
    if rec is None or rec.namespace != namespace or not rec.status.is_final:
        raise NotFound(f"archived sandbox {ref!r} not found", code="SANDBOX_NOT_FOUND")
    return rec


def page(store: Store, namespace: str, *, limit: int, cursor: str | None,
         direction: str | None) -> tuple[list[SandboxRecord], str | None, str | None]:
    """(records newest-archived first, prev_cursor, next_cursor). Cursors are offsets
    into the archive as it is now: archives only grow at the front, so a page may
    repeat an entry but never skips one."""
    if direction not in (None, "forward", "backward"):
        raise InvalidRequest("direction: one of forward, backward")
    try:
        start = int(cursor) if cursor else 0
    except ValueError:
        raise InvalidRequest("cursor: not a cursor this server returned") from None
    if start < 0:
        raise InvalidRequest("cursor: not a cursor this server returned")
    recs = sorted((r for r in store.list(namespace) if r.status.is_final), key=archived_at, reverse=True)
    if direction == "backward":
        start = max(0, start - limit)
    chunk = recs[start:start + limit]
    nxt = str(start + limit) if start + limit < len(recs) else None
    prev = str(start) if start > 0 else None
    return chunk, prev, nxt


def purge(store: Store, retention_secs: int, state_dirs: list[Path]) -> int:
    """Delete archived records older than the retention and their host state; returns
    how many went."""
    cutoff = now_ms() - retention_secs * 1000
    gone = 0
    for sid in store.final_before(cutoff):
        store.delete(sid)
        for base in state_dirs:
            shutil.rmtree(base / sid, ignore_errors=True)
        gone += 1
    if gone:
        log.info("purged %d archived sandbox(es) older than %ss", gone, retention_secs)
    return gone
