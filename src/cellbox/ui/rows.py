"""The sandbox list's rows: what the page shows and what the live feed compares.

One query for the project's records (the store's own page reader), plus the live use
of running ones from the kernel (``stats.py``). ``fingerprint`` is what the live feed
compares between ticks: a change of status, name or set of sandboxes anywhere (CLI,
SDK, timeouts, another server process) changes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..manager.records import SandboxRecord, Status
from ..manager.service import SandboxService
from .stats import sample

MAX_ROWS = 1000


@dataclass(frozen=True)
class Row:
    rec: SandboxRecord
    cpu_s: float | None
    memory_mb: float | None


def records(svc: SandboxService, project: str, status: str = "", text: str = "") -> list[SandboxRecord]:
    statuses = [status] if status in {s.value for s in Status} else None
    recs = svc.list(project, statuses=statuses, live_only=statuses is None, cursor=None, limit=MAX_ROWS).records
    if text:
        t = text.lower()
        recs = [r for r in recs if t in r.id or t in (r.name or "").lower() or t in r.image.lower()]
    return recs


def fingerprint(svc: SandboxService, project: str, status: str = "") -> list[tuple[str, str, str | None]]:
    """(id, status, name) of the project's listed sandboxes, straight from SQLite.

    What the live feed compares every tick: one indexed query with no JSON decode of
    whole records (those are read, and the rows rendered, only when this changes)."""
    sql = "SELECT id, status, json_extract(doc, '$.name') FROM sandboxes WHERE namespace=?"
    args: list[str] = [project]
    if status in {s.value for s in Status}:
        sql += " AND status=?"
        args.append(status)
    else:
        sql += " AND status NOT IN ('terminated','failed')"
    return svc.store.db.execute(sql + " ORDER BY created_at, id LIMIT ?", [*args, MAX_ROWS]).fetchall()


def list_rows(svc: SandboxService, project: str, status: str = "", text: str = "",
              recs: list[SandboxRecord] | None = None) -> list[Row]:
    out = []
    for rec in recs if recs is not None else records(svc, project, status, text):
        use = sample(rec.id) if rec.status == Status.RUNNING else {}
        cpu, mem = use.get("cpu_ns"), use.get("memory_bytes")
        out.append(Row(rec, cpu / 1e9 if cpu is not None else None, mem / 2**20 if mem is not None else None))
    return out
