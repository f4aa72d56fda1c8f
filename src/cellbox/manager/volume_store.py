"""Volume and version records in ``cellbox.db`` (tables ``volumes``, ``volume_versions``).

Which sandbox has a volume mounted is *not* stored here: it lives in each sandbox's
own record (``extra["volumes"]``), so it moves with the sandbox through suspend and
resume, is in every memory snapshot's manifest, and is released the moment the sandbox
record becomes final, whichever path ended it (delete, crash sweep, failed restore).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .records import now_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS volumes_ns_name ON volumes(namespace, name);
CREATE TABLE IF NOT EXISTS volume_versions (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS volume_versions_volume ON volume_versions(volume_id);
"""


@dataclass
class VolumeRecord:
    id: str
    namespace: str
    name: str
    size_mb: int
    created_at: int = field(default_factory=now_ms)
    # A fork's origin: {"volume_id", "version_id" (None: the origin's head then)}.
    forked_from: dict[str, Any] | None = None


@dataclass
class VersionRecord:
    id: str
    volume_id: str
    namespace: str
    message: str = ""
    created_at: int = field(default_factory=now_ms)


_VOL = {f.name for f in fields(VolumeRecord)}
_VER = {f.name for f in fields(VersionRecord)}


class VolumeStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.executescript(SCHEMA)

    def insert(self, rec: VolumeRecord) -> None:
        """Raises ``sqlite3.IntegrityError`` when the name is taken in the namespace."""
        self.db.execute("INSERT INTO volumes (id, namespace, name, created_at, doc) VALUES (?,?,?,?,?)",
                        (rec.id, rec.namespace, rec.name, rec.created_at, json.dumps(asdict(rec))))

    def get(self, volume_id: str) -> VolumeRecord | None:
        row = self.db.execute("SELECT doc FROM volumes WHERE id=?", (volume_id,)).fetchone()
        return _volume(row[0]) if row else None

    def get_by_name(self, namespace: str, name: str) -> VolumeRecord | None:
        row = self.db.execute("SELECT doc FROM volumes WHERE namespace=? AND name=?", (namespace, name)).fetchone()
        return _volume(row[0]) if row else None

    def list(self, namespace: str) -> list[VolumeRecord]:
        rows = self.db.execute("SELECT doc FROM volumes WHERE namespace=? ORDER BY created_at, id", (namespace,))
        return [_volume(r[0]) for r in rows]

    def delete(self, volume_id: str) -> None:
        self.db.execute("DELETE FROM volume_versions WHERE volume_id=?", (volume_id,))
        self.db.execute("DELETE FROM volumes WHERE id=?", (volume_id,))

    def insert_version(self, rec: VersionRecord) -> None:
        self.db.execute("INSERT INTO volume_versions (id, volume_id, created_at, doc) VALUES (?,?,?,?)",
                        (rec.id, rec.volume_id, rec.created_at, json.dumps(asdict(rec))))

    def get_version(self, version_id: str) -> VersionRecord | None:
        row = self.db.execute("SELECT doc FROM volume_versions WHERE id=?", (version_id,)).fetchone()
        return _version(row[0]) if row else None

    def versions(self, volume_id: str) -> list[VersionRecord]:
        rows = self.db.execute("SELECT doc FROM volume_versions WHERE volume_id=? ORDER BY created_at, id",
                               (volume_id,))
        return [_version(r[0]) for r in rows]

    def delete_version(self, version_id: str) -> None:
        self.db.execute("DELETE FROM volume_versions WHERE id=?", (version_id,))


def _volume(doc: str) -> VolumeRecord:
    return VolumeRecord(**{k: v for k, v in json.loads(doc).items() if k in _VOL})


def _version(doc: str) -> VersionRecord:
    return VersionRecord(**{k: v for k, v in json.loads(doc).items() if k in _VER})
