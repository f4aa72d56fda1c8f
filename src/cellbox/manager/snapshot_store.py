"""Snapshot records in SQLite, beside the sandbox table (same database, same rules).

A snapshot outlives its sandbox. Its files are in the pool (``pool/snapshots/<id>``:
a read-only ``rootfs`` subvolume, and for memory snapshots CRIU images in ``mem/``);
the record says what it is, where it came from and whether it is complete.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .records import now_ms


class SnapshotStatus(str, enum.Enum):
    """Wire values of Tensorlake's snapshot statuses (spec §2.6)."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETING = "deleting"


class SnapshotType(str, enum.Enum):
    FILESYSTEM = "filesystem"
    MEMORY = "memory"


@dataclass
class SnapshotRecord:
    id: str
    namespace: str
    sandbox_id: str
    snapshot_type: SnapshotType
    status: SnapshotStatus = SnapshotStatus.IN_PROGRESS
    base_image: str | None = None
    created_at: int = field(default_factory=now_ms)
    size_bytes: int | None = None
    error: str | None = None
    # Everything needed to start a sandbox from it: resources, the bundle config.
    source: dict[str, Any] = field(default_factory=dict)


SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_sandbox ON snapshots(sandbox_id);
"""
_FIELDS = {f.name for f in fields(SnapshotRecord)}


class SnapshotStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.executescript(SCHEMA)

    @staticmethod
    def _doc(rec: SnapshotRecord) -> str:
        data = asdict(rec)
        data["status"] = rec.status.value
        data["snapshot_type"] = rec.snapshot_type.value
        return json.dumps(data)

    @staticmethod
    def _row(doc: str) -> SnapshotRecord:
        data = json.loads(doc)
        data["status"] = SnapshotStatus(data["status"])
        data["snapshot_type"] = SnapshotType(data["snapshot_type"])
        return SnapshotRecord(**{k: v for k, v in data.items() if k in _FIELDS})

    def insert(self, rec: SnapshotRecord) -> None:
        self.db.execute(
            "INSERT INTO snapshots (id, namespace, sandbox_id, status, created_at, doc) VALUES (?,?,?,?,?,?)",
            (rec.id, rec.namespace, rec.sandbox_id, rec.status.value, rec.created_at, self._doc(rec)),
        )

    def update(self, rec: SnapshotRecord) -> None:
        self.db.execute("UPDATE snapshots SET status=?, doc=? WHERE id=?", (rec.status.value, self._doc(rec), rec.id))

    def get(self, snapshot_id: str) -> SnapshotRecord | None:
        row = self.db.execute("SELECT doc FROM snapshots WHERE id=?", (snapshot_id,)).fetchone()
        return self._row(row[0]) if row else None

    def list(self, namespace: str | None = None, sandbox_id: str | None = None) -> list[SnapshotRecord]:
        sql, args = "SELECT doc FROM snapshots WHERE 1=1", []
        if namespace is not None:
            sql += " AND namespace=?"
            args.append(namespace)
        if sandbox_id is not None:
            sql += " AND sandbox_id=?"
            args.append(sandbox_id)
        sql += " ORDER BY created_at, id"
        return [self._row(r[0]) for r in self.db.execute(sql, args)]

    def delete(self, snapshot_id: str) -> None:
        self.db.execute("DELETE FROM snapshots WHERE id=?", (snapshot_id,))
