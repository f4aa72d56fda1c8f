"""The door's store on the cluster's PostgreSQL: API keys, quotas, secrets, audit.

The same methods as ``auth.store.AuthStore`` (SQLite, one host), so the door's
``Authenticator``, ``Audit``, bootstrap and routes run on it unchanged; with it,
control-plane replicas share no ``cellbox.db``. A revoke is one row update that every
replica's ``Authenticator`` reads again within its ``ROW_TTL`` (0.5 s): the same
window as on one host, now across replicas.

Synchronous psycopg on purpose: the door's callers are synchronous (the ASGI gate
and the proxy's resolver call ``authenticate`` inline), and a key row is read at most
once per ``ROW_TTL`` per key and replica, a ~0.2 ms primary-key read on the
database's network. A short connect and statement timeout bound how long a
database outage can hold the event loop; an outage is a 503 naming the database,
never a 500, and a connection the database dropped (a restart) is replaced once,
transparently.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from ..auth.keys import Role
from ..auth.store import KeyRow, now_ms
from ..errors import CellboxError
from .db import check_dsn
from .quota import SNAPSHOT_USE_SQL, USAGE_SQL, usage_args

T = TypeVar("T")
_KEY_COLS = "id, hash, project, role, name, created_at, expires_at, last_used_at, revoked_at"
CONNECT_TIMEOUT_S = 2
STATEMENT_TIMEOUT_MS = 2000


class DatabaseUnavailable(CellboxError):
    """The cluster database cannot be reached (503): nothing was changed; retry."""

    status = 503
    code = "DATABASE_UNAVAILABLE"
    headers = {"Retry-After": "1"}


def _key(row: tuple[Any, ...]) -> KeyRow:
    return KeyRow(row[0], row[1], row[2], Role(row[3]), *row[4:])


class PgAuthStore:
    """``AuthStore``'s interface on PostgreSQL (tables of migration 0002)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = check_dsn(dsn)
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()  # one connection; the door's calls are short

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                         options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
        return self._conn

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work`` on the connection; a dropped connection is replaced once."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return work(self._connection())
                except psycopg.OperationalError as exc:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise DatabaseUnavailable(f"the cluster database is unavailable: {exc}".strip()) from None
            raise AssertionError("unreachable")

    def _rows(self, sql: str, args: tuple[Any, ...] | list[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        return self._run(lambda c: c.execute(sql, args).fetchall())

    def _exec(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> int:
        return self._run(lambda c: c.execute(sql, args).rowcount)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- keys ------------------------------------------------------------------------------

    def add_key(self, key_id: str, key_hash: str, project: str, role: Role, *,
                name: str | None = None, expires_at: int | None = None) -> KeyRow:
        rows = self._rows(f"INSERT INTO api_keys ({_KEY_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,NULL,NULL) "
                          f"RETURNING {_KEY_COLS}", (key_id, key_hash, project, role.value, name, now_ms(), expires_at))
        return _key(rows[0])

    def get_key(self, key_id: str) -> KeyRow | None:
        rows = self._rows(f"SELECT {_KEY_COLS} FROM api_keys WHERE id = %s", (key_id,))
        return _key(rows[0]) if rows else None

    def list_keys(self, project: str | None = None) -> list[KeyRow]:
        if project is None:
            return [_key(r) for r in self._rows(f"SELECT {_KEY_COLS} FROM api_keys ORDER BY created_at, id")]
        return [_key(r) for r in self._rows(f"SELECT {_KEY_COLS} FROM api_keys WHERE project = %s "
                                            "ORDER BY created_at, id", (project,))]

    def has_admin_key(self) -> bool:
        return bool(self._rows("SELECT 1 FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL LIMIT 1"))

    def revoke_key(self, key_id: str) -> bool:
        return self._exec("UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                          (now_ms(), key_id)) == 1

    def touch_key(self, key_id: str, at: int) -> None:
        self._exec("UPDATE api_keys SET last_used_at = %s WHERE id = %s", (at, key_id))

    # -- quotas ----------------------------------------------------------------------------

    def get_quota(self, project: str) -> dict[str, float]:
        rows = self._rows("SELECT doc FROM quotas WHERE project = %s", (project,))
        return dict(rows[0][0]) if rows else {}

    def set_quota(self, project: str, limits: dict[str, int]) -> None:
        self._exec("INSERT INTO quotas (project, doc) VALUES (%s, %s) "
                   "ON CONFLICT (project) DO UPDATE SET doc = EXCLUDED.doc", (project, json.dumps(limits)))

    def usage(self, project: str) -> dict[str, float]:
        """What a project's placed, not suspended sandboxes use (the rows quota.py admits on)."""
        row = self._rows(USAGE_SQL, usage_args(project))[0]
        snaps = self._rows(SNAPSHOT_USE_SQL, {"project": project})[0]
        return {"running_sandboxes": row[0], "vcpus": float(row[1]), "memory_mb": int(row[2]),
                "disk_mb": int(row[3]), "snapshots": int(snaps[0]), "snapshot_bytes": int(snaps[1])}

    # -- secrets ---------------------------------------------------------------------------

    def put_secret(self, project: str, name: str, sealed: bytes) -> None:
        self._exec("INSERT INTO secrets (project, name, value, updated_at) VALUES (%s,%s,%s,%s) "
                   "ON CONFLICT (project, name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                   (project, name, sealed, now_ms()))

    def sealed_secrets(self, project: str, names: list[str]) -> dict[str, bytes]:
        if not names:
            return {}
        rows = self._rows("SELECT name, value FROM secrets WHERE project = %s AND name = ANY(%s)",
                          (project, list(names)))
        return {r[0]: bytes(r[1]) for r in rows}

    def list_secrets(self, project: str) -> list[dict[str, Any]]:
        return [{"name": r[0], "updated_at": r[1]} for r in self._rows(
            "SELECT name, updated_at FROM secrets WHERE project = %s ORDER BY name", (project,))]

    def delete_secret(self, project: str, name: str) -> bool:
        return self._exec("DELETE FROM secrets WHERE project = %s AND name = %s", (project, name)) == 1

    # -- audit -----------------------------------------------------------------------------

    def audit(self, *, key_id: str | None, project: str | None, action: str, obj: str | None,
              status: int, client: str | None) -> None:
        self._exec("INSERT INTO audit (at, key_id, project, action, object, status, client) "
                   "VALUES (%s,%s,%s,%s,%s,%s,%s)", (now_ms(), key_id, project, action, obj, status, client))

    def prune_audit(self, keep: int) -> None:
        self._exec("DELETE FROM audit WHERE seq <= (SELECT max(seq) FROM audit) - %s", (keep,))

    def audit_log(self, *, project: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        cols = ("seq", "at", "key_id", "project", "action", "object", "status", "client")
        sql = f"SELECT {', '.join(cols)} FROM audit"
        args: list[Any] = []
        if project is not None:
            sql += " WHERE project = %s"
            args.append(project)
        return [dict(zip(cols, r)) for r in self._rows(sql + " ORDER BY seq DESC LIMIT %s", [*args, limit])]
