"""The audit log's bounds (auth/audit.py): failed authentications rate-limited per
process with the dropped ones counted, the table capped, no secret ever written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cellbox.auth import keys
from cellbox.auth.audit import Audit
from cellbox.auth.keys import Principal, Role
from cellbox.auth.store import AuthStore


def _store(tmp_path: Path) -> AuthStore:
    return AuthStore(sqlite3.connect(str(tmp_path / "db"), isolation_level=None))


def test_failed_authentications_are_rate_limited_and_counted(tmp_path: Path):
    store = _store(tmp_path)
    now = [100.0]
    audit = Audit(store, per_second=3, clock=lambda: now[0])
    key_id, full, _ = keys.new_key()
    for _ in range(10):
        audit.failed_auth(authorization=f"Bearer {full}", method="GET", target="/sandboxes?x=1", status=401,
                          client="198.51.100.7", via="api")
    rows = store.audit_log(limit=100)
    assert len(rows) == 3 and all(r["key_id"] == key_id and r["status"] == 401 for r in rows)
    assert rows[0]["action"] == "api GET /sandboxes"  # no query string
    now[0] += 1.5
    audit.failed_auth(authorization=b"Bearer hunter2", method=b"POST", target=b"/keys", status=401,
                      client=None, via="proxy")
    newest = store.audit_log(limit=1)[0]
    assert newest["object"] == "+7 not recorded" and newest["key_id"] is None
    dump = "\n".join(store.db.iterdump())
    assert full.split("_")[2] not in dump and "hunter2" not in dump


def test_the_log_is_capped_and_proxy_reads_are_not_recorded(tmp_path: Path):
    store = _store(tmp_path)
    audit = Audit(store, max_rows=50)
    who = Principal("0" * 16, "p", Role.MEMBER)
    for i in range(120):
        audit.proxy_call(principal=who, method=b"POST", target=b"/api/v1/processes", sandbox=f"s{i}", port=9501,
                         agent_port=9501, status=200)
    audit.proxy_call(principal=who, method=b"GET", target=b"/api/v1/processes", sandbox="r", port=9501,
                     agent_port=9501, status=200)
    audit.proxy_call(principal=who, method=b"POST", target=b"/", sandbox="app", port=8080, agent_port=9501, status=200)
    count = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    assert count <= 50 + 50  # pruned to 50 at each 50th insert
    objects = {r["object"] for r in store.audit_log(limit=200)}
    assert "s119" in objects and "s0" not in objects and "r" not in objects and "app" not in objects
