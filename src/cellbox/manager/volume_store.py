"""Volume and version records in ``cellbox.db`` (tables ``volumes``, ``volume_versions``).

Which sandbox has which volume mounted is in ``volume_mounts``, one row per mount,
keyed by sandbox ID: a mount holds its volume while the sandbox's record is live
(joined with ``sandboxes``), so it is released the moment the record becomes final,
whichever path ended it (delete, crash sweep, failed restore), and a suspended sandbox
keeps holding it. Its own table, not the sandbox record's JSON: other code writes whole
records from copies it read earlier (a create still finishing), which would silently
drop a mount made meanwhile and with it the one-writer hold. The record keeps a copy
(``extra["volumes"]``) only for rendering ``SandboxInfo.file_systems``.
"""

from __future__ import annotations

import builtins
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
CREATE TABLE IF NOT EXISTS volume_mounts (
    sandbox_id TEXT NOT NULL,
    key TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, key)
);
CREATE INDEX IF NOT EXISTS volume_mounts_volume ON volume_mounts(volume_id);
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

    def list(self, namespace: str) -> builtins.list[VolumeRecord]:
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

    def versions(self, volume_id: str) -> builtins.list[VersionRecord]:
        rows = self.db.execute("SELECT doc FROM volume_versions WHERE volume_id=? ORDER BY created_at, id",
                               (volume_id,))
        return [_version(r[0]) for r in rows]

    def delete_version(self, version_id: str) -> None:
        self.db.execute("DELETE FROM volume_versions WHERE id=?", (version_id,))


    # -- mounts --------------------------------------------------------------------------------

    def mounts(self, sandbox_id: str) -> builtins.list[dict[str, Any]]:
        rows = self.db.execute("SELECT doc FROM volume_mounts WHERE sandbox_id=? ORDER BY key", (sandbox_id,))
        return [json.loads(r[0]) for r in rows]

    def set_mounts(self, sandbox_id: str, mounts: builtins.list[dict[str, Any]]) -> None:
        with self.db:  # one transaction (the connection is in autocommit mode otherwise)
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM volume_mounts WHERE sandbox_id=?", (sandbox_id,))
            self.db.executemany("INSERT INTO volume_mounts (sandbox_id, key, volume_id, doc) VALUES (?,?,?,?)",
                                [(sandbox_id, m["key"], m["volume_id"], json.dumps(m)) for m in mounts])

    def claim(self, sandbox_id: str, mounts: builtins.list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
        """Make ``mounts`` the sandbox's, unless a read-write one's volume has another live
        writer: then nothing changes and that ``(sandbox ID, mount)`` is returned.

        One ``BEGIN IMMEDIATE`` transaction (the check and the write), so two processes
        sharing the database (a server and a test's manager) cannot both take a volume."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for m in mounts:
                if m["read_only"]:
                    continue
                for other_id, other in self.live_mounts(m["volume_id"]):
                    if other_id != sandbox_id and not other["read_only"]:
                        self.db.execute("ROLLBACK")
                        return other_id, other
            self.db.execute("DELETE FROM volume_mounts WHERE sandbox_id=?", (sandbox_id,))
            self.db.executemany("INSERT INTO volume_mounts (sandbox_id, key, volume_id, doc) VALUES (?,?,?,?)",
                                [(sandbox_id, m["key"], m["volume_id"], json.dumps(m)) for m in mounts])
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        return None

    def live_mounts(self, volume_id: str) -> builtins.list[tuple[str, dict[str, Any]]]:
        """(sandbox ID, mount) of every sandbox whose record is live (suspended included)."""
        rows = self.db.execute(
            "SELECT m.sandbox_id, m.doc FROM volume_mounts m JOIN sandboxes s ON s.id = m.sandbox_id "
            "WHERE m.volume_id=? AND s.status NOT IN ('terminated','failed') ORDER BY m.sandbox_id, m.key",
            (volume_id,))
        return [(r[0], json.loads(r[1])) for r in rows]


def _volume(doc: str) -> VolumeRecord:
    return VolumeRecord(**{k: v for k, v in json.loads(doc).items() if k in _VOL})


def _version(doc: str) -> VersionRecord:
    return VersionRecord(**{k: v for k, v in json.loads(doc).items() if k in _VER})
