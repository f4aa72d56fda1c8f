"""Warm pools on nodes: a dev cluster whose nodes keep warm sandboxes
(CLUSTER_WARM_POOL=1) and two control-plane replicas. A cluster create claims a warm
sandbox on its node (no boot), through either replica; the claimed sandbox keeps its
local ID, which the cluster records and the proxy routes by."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from .devcluster import DevCluster

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def cluster() -> Iterator[DevCluster]:
    c = DevCluster.up(2, CLUSTER_WARM_POOL="1")
    try:
        yield c
    finally:
        c.down()
    assert "cbx-node-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not c.base.exists()


def _local(c: DevCluster, k: int, local_id: str) -> dict | None:
    with sqlite3.connect(c.base / f"node-{k}" / "cellbox.db") as db:
        row = db.execute("SELECT doc FROM sandboxes WHERE id = ?", (local_id,)).fetchone()
    return json.loads(row[0]) if row else None


def _warm_ready(c: DevCluster, k: int) -> int:
    with sqlite3.connect(c.base / f"node-{k}" / "cellbox.db") as db:
        return db.execute("SELECT count(*) FROM sandboxes WHERE namespace = '__warm__' AND status = 'running'"
                          ).fetchone()[0]


def _row(c: DevCluster, sandbox_id: str) -> dict:
    with psycopg.connect(c.dsn) as db:
        cur = db.execute("SELECT node_id, local_id, state FROM sandboxes WHERE id = %s", (sandbox_id,))
        node_id, local_id, state = cur.fetchone()
    return {"node_id": node_id, "local_id": local_id, "state": state}


def test_creates_claim_from_the_nodes_pool_through_either_replica(cluster: DevCluster) -> None:
    second = cluster.add_replica()
    for k in (1, 2):
        cluster.wait_for(lambda k=k: _warm_ready(cluster, k) >= 1, 180, f"node-{k}'s warm pool filled")
    made = []
    for api in (cluster.api, second.api):
        with httpx.Client(base_url=api, headers=cluster.auth(), timeout=300) as http:
            r = http.post("/sandboxes", json={"memory_mb": 256})
        assert r.status_code == 201 and r.json()["status"] == "running", r.text
        made.append(r.json())
    for sb in made:
        row = _row(cluster, sb["id"])
        assert row["local_id"] and row["local_id"] != sb["id"]  # a warm sandbox keeps its own ID
        local = _local(cluster, int(row["node_id"][-1]), row["local_id"])
        assert local is not None and local["extra"].get("warm") is True, local
        assert local["namespace"] == "default" and local["status"] == "running"
        # The proxy routes by the local ID: the request reaches that very sandbox.
        assert cluster.run(sb["id"], "cat /etc/hostname") == (200, row["local_id"])
    with cluster.client() as http:
        for sb in made:
            assert http.delete(f"/sandboxes/{sb['id']}").json()["status"] == "terminated"
    for sb in made:
        assert _row(cluster, sb["id"])["state"] == "terminated"
        # The node destroyed the claimed sandbox itself, not only the cluster's row.
        local_id = _row(cluster, sb["id"])["local_id"]
        states = [(_local(cluster, k, local_id) or {}).get("status") for k in (1, 2)]
        assert "terminated" in states and "running" not in states, states


def test_a_named_create_claims_warm_and_its_name_is_the_clusters(cluster: DevCluster) -> None:
    cluster.wait_for(lambda: _warm_ready(cluster, 1) + _warm_ready(cluster, 2) >= 1, 180, "a warm sandbox")
    with cluster.client() as http:
        sb = http.post("/sandboxes", json={"memory_mb": 256, "name": "warmnamed"}).json()
        assert sb["status"] == "running", sb
        assert http.post("/sandboxes", json={"memory_mb": 256, "name": "warmnamed"}).status_code == 409
        assert cluster.run("warmnamed", "echo hi") == (200, "hi")
        assert http.delete("/sandboxes/warmnamed").json()["status"] == "terminated"
