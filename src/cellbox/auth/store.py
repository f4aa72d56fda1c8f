"""The door's tables, in the same SQLite (WAL) database as the sandbox records.

Kept behind this one small class so the store can move to PostgreSQL later without
touching the callers: every method is one short statement (or one transaction), and
nothing outside this module writes SQL for these tables. Key rows are read by primary
key; ``guard.Authenticator`` reuses one for at most 0.5 s, so a revoke written here by
any process sharing the database is seen everywhere within 1 s.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from .keys import Principal, Role

SCHEMA_VERSION = 1
HOLD_TTL_MS = 15 * 60_000  # longer than any create (a cold create takes seconds)
SCHEMA = """
CREATE TABLE IF NOT EXISTS door_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    project TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS quotas (project TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (project, name)
);
CREATE TABLE IF NOT EXISTS create_events (project TEXT NOT NULL, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quota_holds (
    sandbox_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    cpus REAL NOT NULL,
    memory_mb INTEGER NOT NULL,
    disk_mb INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS create_events_at ON create_events(project, at);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    key_id TEXT,
    project TEXT,
    action TEXT NOT NULL,
    object TEXT,
    status INTEGER NOT NULL,
    client TEXT
);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class KeyRow:
    id: str
    hash: str
    project: str
    role: Role
    name: str | None
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    revoked_at: int | None

    @functools.cached_property
    def principal(self) -> Principal:
        """Who a request showing this key is (made once per cached row)."""
        return Principal(self.id, self.project, self.role)

    def public(self) -> dict[str, Any]:
        """What the API shows about a key: everything but its hash."""
        return {
            "id": self.id, "project": self.project, "role": self.role.value, "name": self.name,
            "created_at": self.created_at, "expires_at": self.expires_at,
            "last_used_at": self.last_used_at, "revoked": self.revoked_at is not None,
        }


_KEY_COLS = "id, hash, project, role, name, created_at, expires_at, last_used_at, revoked_at"


def _key(row: tuple[Any, ...]) -> KeyRow:
    return KeyRow(row[0], row[1], row[2], Role(row[3]), *row[4:])


class AuthStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        if db.execute("SELECT version FROM door_schema").fetchone() is None:
            db.execute("INSERT INTO door_schema (version) VALUES (?)", (SCHEMA_VERSION,))

    # -- keys ------------------------------------------------------------------------------

    def add_key(self, key_id: str, key_hash: str, project: str, role: Role, *,
                name: str | None = None, expires_at: int | None = None) -> KeyRow:
        self.db.execute(
            f"INSERT INTO api_keys ({_KEY_COLS}) VALUES (?,?,?,?,?,?,?,NULL,NULL)",
            (key_id, key_hash, project, role.value, name, now_ms(), expires_at),
        )
        row = self.get_key(key_id)
        assert row is not None
        return row

    def get_key(self, key_id: str) -> KeyRow | None:
        row = self.db.execute(f"SELECT {_KEY_COLS} FROM api_keys WHERE id=?", (key_id,)).fetchone()
        return _key(row) if row else None

    def list_keys(self, project: str | None = None) -> list[KeyRow]:
        sql, args = f"SELECT {_KEY_COLS} FROM api_keys", []
        if project is not None:
            sql += " WHERE project=?"
            args.append(project)
        return [_key(r) for r in self.db.execute(sql + " ORDER BY created_at, id", args)]

    def has_admin_key(self) -> bool:
        return self.db.execute(
            "SELECT 1 FROM api_keys WHERE role='admin' AND revoked_at IS NULL LIMIT 1"
        ).fetchone() is not None

    def revoke_key(self, key_id: str) -> bool:
        cur = self.db.execute("UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                              (now_ms(), key_id))
        return cur.rowcount == 1

    def touch_key(self, key_id: str, at: int) -> None:
        self.db.execute("UPDATE api_keys SET last_used_at=? WHERE id=?", (at, key_id))

    # -- quotas ----------------------------------------------------------------------------

    def get_quota(self, project: str) -> dict[str, float]:
        row = self.db.execute("SELECT doc FROM quotas WHERE project=?", (project,)).fetchone()
        return json.loads(row[0]) if row else {}

    def set_quota(self, project: str, limits: dict[str, int]) -> None:
        self.db.execute("INSERT INTO quotas (project, doc) VALUES (?,?) "
                        "ON CONFLICT(project) DO UPDATE SET doc=excluded.doc", (project, json.dumps(limits)))

    def usage(self, project: str) -> dict[str, float]:
        """What a project's running sandboxes use now: live records (suspended ones hold
        no CPU or memory) plus the holds of creates that have no record yet."""
        live = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(json_extract(doc, '$.cpus')), 0), "
            "COALESCE(SUM(json_extract(doc, '$.memory_mb')), 0), "
            "COALESCE(SUM(COALESCE(json_extract(doc, '$.disk_mb'), 0)), 0) FROM sandboxes "
            "WHERE namespace=? AND status NOT IN ('terminated','failed','suspended') "
            "AND id NOT IN (SELECT sandbox_id FROM quota_holds)", (project,)).fetchone()
        held = self.db.execute(
            # A resize's hold (``resize-<id>``) is growth of a sandbox already counted.
            "SELECT COALESCE(SUM(sandbox_id NOT LIKE 'resize-%'), 0), COALESCE(SUM(cpus), 0), "
            "COALESCE(SUM(memory_mb), 0), COALESCE(SUM(disk_mb), 0) "
            "FROM quota_holds WHERE project=?", (project,)).fetchone()
        return {"running_sandboxes": live[0] + held[0], "vcpus": live[1] + held[1],
                "memory_mb": live[2] + held[2], "disk_mb": live[3] + held[3]}

    def admit_create(self, project: str, sandbox_id: str, cpus: float, memory_mb: int, disk_mb: int,
                     limits: dict[str, float]) -> tuple[str, float, float] | int | None:
        """Check a create against ``limits`` and, if it fits, hold its resources, in one
        ``BEGIN IMMEDIATE`` transaction: every process sharing the database queues on
        SQLite's write lock here, so concurrent creates cannot both take the last unit.

        Returns None when admitted; seconds to wait when the create rate is used up; or
        ``(limit, value, use)`` for the first resource limit the create would pass.
        """
        now = now_ms()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            # Holds of a process that died mid-create would otherwise count for ever.
            self.db.execute("DELETE FROM quota_holds WHERE at < ?", (now - HOLD_TTL_MS,))
            self.db.execute("DELETE FROM create_events WHERE at < ?", (now - 60_000,))
            rate = limits.get("creates_per_minute")
            if rate is not None:
                recent = [r[0] for r in self.db.execute(
                    "SELECT at FROM create_events WHERE project=? ORDER BY at", (project,))]
                if len(recent) >= rate:
                    self.db.execute("COMMIT")
                    oldest = recent[-int(rate)] if rate else now
                    return max(1, int((oldest + 60_000 - now) / 1000) + 1)
            use = self.usage(project)
            wanted = {"running_sandboxes": 1, "vcpus": cpus, "memory_mb": memory_mb, "disk_mb": disk_mb}
            for name, extra in wanted.items():
                value = limits.get(name)
                if value is not None and use[name] + extra > value:
                    self.db.execute("COMMIT")
                    return name, value, use[name]
            self.db.execute("INSERT INTO create_events (project, at) VALUES (?,?)", (project, now))
            self.db.execute("INSERT OR REPLACE INTO quota_holds VALUES (?,?,?,?,?,?)",
                            (sandbox_id, project, cpus, memory_mb, disk_mb, now))
            self.db.execute("COMMIT")
            return None
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def admit_resize(self, project: str, hold_id: str, cpus: float, memory_mb: int, disk_mb: int,
                     limits: dict[str, float]) -> tuple[str, float, float] | None:
        """Like :meth:`admit_create` for a resize's growth (no new sandbox, no rate):
        None and a hold of the growth, or the first ``(limit, value, use)`` it would pass."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            use = self.usage(project)
            for name, extra in (("vcpus", cpus), ("memory_mb", memory_mb), ("disk_mb", disk_mb)):
                value = limits.get(name)
                if value is not None and extra > 0 and use[name] + extra > value:
                    self.db.execute("COMMIT")
                    return name, value, use[name]
            self.db.execute("INSERT OR REPLACE INTO quota_holds VALUES (?,?,?,?,?,?)",
                            (hold_id, project, cpus, memory_mb, disk_mb, now_ms()))
            self.db.execute("COMMIT")
            return None
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def release_hold(self, sandbox_id: str) -> None:
        """The create is over (recorded, or failed): its record counts from now on."""
        self.db.execute("DELETE FROM quota_holds WHERE sandbox_id=?", (sandbox_id,))

    # -- secrets ---------------------------------------------------------------------------

    def put_secret(self, project: str, name: str, sealed: bytes) -> None:
        self.db.execute("INSERT INTO secrets (project, name, value, updated_at) VALUES (?,?,?,?) "
                        "ON CONFLICT(project, name) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                        (project, name, sealed, now_ms()))

    def sealed_secrets(self, project: str, names: list[str]) -> dict[str, bytes]:
        if not names:
            return {}
        rows = self.db.execute(
            f"SELECT name, value FROM secrets WHERE project=? AND name IN ({','.join('?' * len(names))})",
            [project, *names])
        return {r[0]: bytes(r[1]) for r in rows}

    def list_secrets(self, project: str) -> list[dict[str, Any]]:
        return [{"name": r[0], "updated_at": r[1]} for r in self.db.execute(
            "SELECT name, updated_at FROM secrets WHERE project=? ORDER BY name", (project,))]

    def delete_secret(self, project: str, name: str) -> bool:
        return self.db.execute("DELETE FROM secrets WHERE project=? AND name=?", (project, name)).rowcount == 1

    # -- audit -----------------------------------------------------------------------------

    def audit(self, *, key_id: str | None, project: str | None, action: str, obj: str | None,
              status: int, client: str | None) -> None:
        self.db.execute("INSERT INTO audit (at, key_id, project, action, object, status, client) "
                        "VALUES (?,?,?,?,?,?,?)", (now_ms(), key_id, project, action, obj, status, client))

    def prune_audit(self, keep: int) -> None:
        """Keep the newest ``keep`` rows (auth/audit.py bounds the log with it)."""
        self.db.execute("DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?", (keep,))

    def audit_log(self, *, project: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = "SELECT seq, at, key_id, project, action, object, status, client FROM audit", []
        if project is not None:
            sql += " WHERE project=?"
            args.append(project)
        rows = self.db.execute(sql + " ORDER BY seq DESC LIMIT ?", [*args, limit])
        cols = ("seq", "at", "key_id", "project", "action", "object", "status", "client")
        return [dict(zip(cols, r)) for r in rows]
