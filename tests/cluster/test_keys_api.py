"""The door on PostgreSQL across two real control-plane replicas (no nodes needed):
a key made through one works on the other, a revoke through one reaches both within
the door's cache window, secrets and quotas are shared, and every single-host route a
replica does not serve answers 501 naming it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from cellbox.auth.guard import ROW_TTL
from cellbox.cluster import api_wide

from .pg import PgServer
from .replicas import Replicas

pytestmark = pytest.mark.root  # the throwaway PostgreSQL runs as user postgres (runuser)


@pytest.fixture
def two(dsn: str) -> Iterator[Replicas]:
    replicas = Replicas(dsn)
    try:
        replicas.start()
        replicas.start()
        yield replicas
    finally:
        replicas.stop()


def _member(client: httpx.Client, project: str = "p1") -> tuple[str, str]:
    r = client.post("/keys", json={"project": project, "role": "member", "name": "t"})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def test_a_key_made_on_one_replica_works_on_the_other(two: Replicas) -> None:
    a, b = two.running
    admin = two.admin_key()
    with a.client(admin) as ca, b.client(admin) as cb:
        key_id, key = _member(ca)
        assert key_id in [k["id"] for k in cb.get("/keys").json()["keys"]]
        assert not (b.data_dir / "admin.key").exists()  # B made no key of its own: one door
    with b.client(key) as member:
        r = member.get("/sandboxes")
        assert r.status_code == 200, r.text
        assert r.json() == {"sandboxes": []}
        assert member.post("/platform/v1/keys/introspect").json()["projectId"] == "p1"
        assert member.get("/keys").status_code == 403  # a member key is still a member key there


def test_a_revoke_on_one_replica_fails_on_both_within_the_cache_window(two: Replicas) -> None:
    a, b = two.running
    admin = two.admin_key()
    with a.client(admin) as ca:
        key_id, key = _member(ca)
    with a.client(key) as ma, b.client(key) as mb:
        assert ma.get("/sandboxes").status_code == 200  # both replicas now cache its row
        assert mb.get("/sandboxes").status_code == 200
        with b.client(admin) as cb:
            assert cb.delete(f"/keys/{key_id}").json() == {"id": key_id, "revoked": True}
        revoked_at = time.monotonic()
        assert mb.get("/sandboxes").status_code == 401  # the revoking replica: at once
        while (r := ma.get("/sandboxes")).status_code == 200:
            assert time.monotonic() - revoked_at < ROW_TTL + 1.0, "replica A still admits a revoked key"
            time.sleep(0.05)
        assert r.status_code == 401 and "revoked" in r.json()["error"]
        assert time.monotonic() - revoked_at <= ROW_TTL + 1.0
    with a.client(admin) as ca:
        entries = ca.get("/audit").json()["entries"]
    assert any(e["action"] == "DELETE /keys/{key_id}" and e["status"] == 200 for e in entries)


def test_secrets_and_quotas_are_shared(two: Replicas) -> None:
    a, b = two.running
    admin = two.admin_key()
    with a.client(admin) as ca, b.client(admin) as cb:
        _, key = _member(ca, "p2")
        assert ca.put("/quotas/p2", json={"running_sandboxes": 3}).status_code == 200
        got = cb.get("/quotas/p2").json()
        assert got["limits"] == {"running_sandboxes": 3}
        assert got["usage"]["running_sandboxes"] == 0
    with a.client(key) as ma, b.client(key) as mb:
        assert ma.put("/secrets/TOKEN", json={"value": "s3cret"}).status_code == 200
        names = [s["name"] for s in mb.get("/secrets").json()["secrets"]]
        assert names == ["TOKEN"]
        assert "s3cret" not in mb.get("/secrets").text
        assert mb.delete("/secrets/TOKEN").status_code == 200
        assert ma.delete("/secrets/TOKEN").json()["code"] == "SECRET_NOT_FOUND"


def test_a_database_restart_is_invisible_to_the_door(two: Replicas, pg: PgServer) -> None:
    """The key store replaces a connection the restart cut (once, transparently)."""
    a, _ = two.running
    with a.client(two.admin_key()) as ca:
        assert ca.get("/keys").status_code == 200
        pg.restart()
        time.sleep(ROW_TTL + 0.1)  # the cached row expired: the next request reads the database
        r = ca.get("/keys")
        assert r.status_code == 200, r.text


def _fill(path: str) -> str:
    return re.sub(r"\{namespace\}", "p1", re.sub(r"\{(?!namespace)[^}]*\}", "x1", path))


def test_every_single_host_route_is_served_or_a_501_naming_it(two: Replicas) -> None:
    """Each route of the single-host server, flat and namespaced: a real answer (never a
    500, never the framework's bare 404 of a missing route) or 501 naming it."""
    a, _ = two.running
    not_served = []
    with a.client(two.admin_key()) as ca:
        for method, path in api_wide.single_host_routes():
            r = ca.request(method, _fill(path), json={} if method in ("POST", "PUT", "PATCH") else None)
            assert r.status_code < 500 or r.status_code == 501, (method, path, r.status_code, r.text)
            assert r.json() != {"detail": "Not Found"}, (method, path)
            if r.status_code == 501:
                assert r.json()["code"] == "NOT_IN_CLUSTER_MODE"
                assert f"{method} {path}" in r.json()["error"]
                not_served.append((method, path))
    assert ("GET", "/sandbox-pools") in not_served
    assert ("GET", "/v1/namespaces/{namespace}/sandbox-pools") in not_served
    assert ("GET", "/sandboxes/{sandbox_id}/logs") not in not_served  # read from the node (node_reads.py)
    assert ("GET", "/v1/namespaces/{namespace}/sandboxes/{sandbox_id}/processes") not in not_served
    assert ("GET", "/keys") not in not_served and ("POST", "/sandboxes") not in not_served


def test_quotas_are_enforced_at_a_cluster_create(two: Replicas, dsn: str) -> None:
    """Limits set through one replica bind creates through the other, before any node is
    asked (this cluster has none: an admitted create is refused NO_NODE, after admission)."""
    import psycopg

    a, b = two.running
    admin = two.admin_key()
    with a.client(admin) as ca:
        _, key = _member(ca, "q1")
        assert ca.put("/quotas/q1", json={"running_sandboxes": 1, "memory_mb": 1024}).status_code == 200
    with b.client(key) as mb:
        r = mb.post("/sandboxes", json={"memory_mb": 2048})
        assert r.status_code == 403 and r.json()["code"] == "QUOTA_EXCEEDED" and "memory_mb" in r.json()["error"]
        r = mb.post("/sandboxes", json={"memory_mb": 512})
        assert r.status_code == 429 and r.json()["code"] == "NO_NODE"  # admitted; no node to place it on
        with psycopg.connect(dsn, autocommit=True) as db:  # one running sandbox of q1 (a row, no node needed)
            db.execute("INSERT INTO sandboxes (id, project, state, desired_state, memory_mb) "
                       "VALUES ('q1running', 'q1', 'running', 'running', 256)")
        r = mb.post("/sandboxes", json={"memory_mb": 256})
        assert r.status_code == 403 and "running_sandboxes" in r.json()["error"]
        assert mb.get("/quotas/q1").json()["usage"]["running_sandboxes"] == 1
    with a.client(admin) as ca:
        assert ca.put("/quotas/q1", json={"creates_per_minute": 0, "running_sandboxes": None}).status_code == 200
    with b.client(key) as mb:
        r = mb.post("/sandboxes", json={"memory_mb": 256})
        assert r.status_code == 429 and r.json()["code"] == "RATE_LIMITED" and r.headers["retry-after"] == "60"
