"""Pool definitions in the sandbox database: shared by every server process, which each
keep their own warm sandboxes for them (warm sandboxes are process-local, like the
default pool's)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from ..manager.records import now_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS sandbox_pools (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sandbox_pools_ns ON sandbox_pools(namespace);
"""


@dataclass
class PoolRecord:
    id: str
    namespace: str
    image: str  # as the client wrote it (the catalog's canonical name is resolved at use)
    cpus: float
    memory_mb: int
    disk_mb: int | None = None
    timeout_secs: int = 0
    entrypoint: list[str] | None = None
    max_containers: int | None = None
    warm_containers: int = 0
    network: dict[str, Any] | None = None  # NetworkConfig as sent; None = unrestricted
    created_at: int = field(default_factory=now_ms)
    updated_at: int = field(default_factory=now_ms)


class PoolStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.executescript(SCHEMA)

    def put(self, rec: PoolRecord) -> None:
        self.db.execute("INSERT OR REPLACE INTO sandbox_pools (id, namespace, doc) VALUES (?,?,?)",
                        (rec.id, rec.namespace, json.dumps(asdict(rec))))

    def get(self, pool_id: str) -> PoolRecord | None:
        row = self.db.execute("SELECT doc FROM sandbox_pools WHERE id=?", (pool_id,)).fetchone()
        return PoolRecord(**json.loads(row[0])) if row else None

    def list(self, namespace: str | None = None) -> list[PoolRecord]:
        if namespace is None:
            rows = self.db.execute("SELECT doc FROM sandbox_pools ORDER BY rowid")
        else:
            rows = self.db.execute("SELECT doc FROM sandbox_pools WHERE namespace=? ORDER BY rowid", (namespace,))
        return [PoolRecord(**json.loads(r[0])) for r in rows]

    def delete(self, pool_id: str) -> None:
        self.db.execute("DELETE FROM sandbox_pools WHERE id=?", (pool_id,))
