"""Console sessions without a browser or server: a revoke or expiry ends a session at
its next check, a forged or unknown ID is no session, and logins cannot grow memory
without bound."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from cellbox.auth import keys
from cellbox.auth.keys import Principal, Role
from cellbox.auth.store import AuthStore, now_ms
from cellbox.ui import sessions as sessions_mod
from cellbox.ui.sessions import Sessions


def _store(tmp_path: Path) -> AuthStore:
    return AuthStore(sqlite3.connect(str(tmp_path / "db"), isolation_level=None))


def _key(store: AuthStore, expires_at: int | None = None) -> Principal:
    key_id, _, key_hash = keys.new_key()
    row = store.add_key(key_id, key_hash, "p1", Role.MEMBER, expires_at=expires_at)
    return Principal(row.id, row.project, row.role)


def test_revoke_and_expiry_end_sessions(tmp_path: Path):
    store = _store(tmp_path)
    s = Sessions(store)
    alive, revoked = s.open(_key(store)), s.open(_key(store))
    expiring = s.open(_key(store, expires_at=now_ms() + 200))
    assert s.check(alive.sid) is alive and s.check(revoked.sid) is revoked and s.check(expiring.sid) is expiring
    store.revoke_key(revoked.principal.key_id)
    time.sleep(0.25)
    assert s.check(revoked.sid) is None and s.check(expiring.sid) is None
    assert s.check(alive.sid) is alive
    assert s.check(revoked.sid) is None  # ended for good, not only while revoked
    for forged in (None, "", "x" * 43, alive.sid[:-1]):
        assert s.check(forged) is None
    assert alive.csrf_ok(alive.csrf) and not alive.csrf_ok(revoked.csrf) and not alive.csrf_ok(None)


def test_idle_sessions_end_and_the_table_is_bounded(tmp_path: Path, monkeypatch):
    store = _store(tmp_path)
    s = Sessions(store)
    principal = _key(store)
    old = s.open(principal)
    old.last_seen -= sessions_mod.IDLE_TIMEOUT + 1
    assert s.check(old.sid) is None
    monkeypatch.setattr(sessions_mod, "MAX_SESSIONS", 5)
    opened = [s.open(principal) for _ in range(20)]
    assert len(s._by_id) <= 5 and s.check(opened[-1].sid) is opened[-1]
