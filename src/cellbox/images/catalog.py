"""What cellbox knows about each named image, beyond the OCI index.

The OCI index says which names exist and which manifest each points to; this table
(same SQLite database as the sandboxes) says where an image came from (``build``,
``pull``, ``register``), holds images that are not OCI images at all (a registered
filesystem snapshot: ``kind = snapshot``), and links an image to its pre-booted
memory snapshot (``memory_snapshot_id``). An OCI name without a row (the default
image, made by ``cellbox setup``) is an image of source ``local``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any



def now_ms() -> int:
    return int(time.time() * 1000)


SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);
"""


@dataclass
class ImageRecord:
    name: str
    kind: str = "oci"  # "oci": in the OCI layout; "snapshot": a registered filesystem snapshot
    source: str = "local"  # build | pull | register | local
    digest: str | None = None  # manifest digest (kind oci)
    snapshot_id: str | None = None  # the filesystem snapshot (kind snapshot)
    memory_snapshot_id: str | None = None  # pre-booted: restore this instead of booting
    warmup: list[str] | None = None  # the command run before the memory snapshot
    warm_pool: int = 0  # running sandboxes of this image kept ready for creates
    dockerfile: str | None = None
    size_bytes: int | None = None
    created_at: int = field(default_factory=now_ms)
    extra: dict[str, Any] = field(default_factory=dict)


_FIELDS = {f.name for f in fields(ImageRecord)}


class Catalog:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.executescript(SCHEMA)

    def put(self, rec: ImageRecord) -> None:
        self.db.execute(
            "INSERT INTO images (name, created_at, doc) VALUES (?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET doc=excluded.doc, created_at=excluded.created_at",
            (rec.name, rec.created_at, json.dumps(asdict(rec))),
        )

    def get(self, name: str) -> ImageRecord | None:
        row = self.db.execute("SELECT doc FROM images WHERE name=?", (name,)).fetchone()
        return _row(row[0]) if row else None

    def list(self) -> list[ImageRecord]:
        return [_row(r[0]) for r in self.db.execute("SELECT doc FROM images ORDER BY name")]

    def delete(self, name: str) -> None:
        self.db.execute("DELETE FROM images WHERE name=?", (name,))


def _row(doc: str) -> ImageRecord:
    data = json.loads(doc)
    return ImageRecord(**{k: v for k, v in data.items() if k in _FIELDS})
