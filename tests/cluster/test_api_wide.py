"""The wider Tensorlake API on a real two-node cluster: snapshots (create, list, get,
delete), a create from a snapshot on the node that caches it and on one that must
fetch it from object storage, copies, a network-policy PATCH, the images list; bad
input and other projects' objects are 4xx, never a 500 or a half-made sandbox."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from .devcluster import DevCluster

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def cluster() -> Iterator[DevCluster]:
    c = DevCluster.up(2)
    try:
        yield c
    finally:
        c.down()
    assert not c.base.exists()


@pytest.fixture(autouse=True)
def _clean(cluster: DevCluster) -> Iterator[None]:
    """Whatever a test made goes with it, passed or failed (the suite's leak check)."""
    yield
    with cluster.client() as http:
        for sb in http.get("/sandboxes").json()["sandboxes"]:
            if sb["status"] not in ("terminated", "failed"):
                http.delete(f"/sandboxes/{sb['id']}")


def _create(c: DevCluster, **spec) -> dict:
    with c.client() as http:
        r = http.post("/sandboxes", json={"memory_mb": 256, **spec})
    assert r.status_code == 201 and r.json()["status"] == "running", r.text
    return r.json()


def _node_state(c: DevCluster, node: str, state: str) -> None:
    with psycopg.connect(c.dsn, autocommit=True) as db:
        db.execute("UPDATE nodes SET state = %s WHERE id = %s", (state, node))


def _local_doc(c: DevCluster, sandbox_id: str) -> dict:
    with psycopg.connect(c.dsn) as db:
        node, local = db.execute("SELECT node_id, local_id FROM sandboxes WHERE id = %s", (sandbox_id,)).fetchone()
    with sqlite3.connect(c.base / f"node-{node[-1]}" / "cellbox.db") as db:
        return json.loads(db.execute("SELECT doc FROM sandboxes WHERE id = ?", (local or sandbox_id,)).fetchone()[0])


def test_snapshot_list_get_and_restore_on_either_node(cluster: DevCluster) -> None:
    src = _create(cluster)
    assert cluster.run(src["id"], "echo kept > /root/f && sync") == (200, "")
    with cluster.client() as http:
        r = http.post(f"/sandboxes/{src['id']}/snapshot", json={"snapshot_type": "filesystem"})
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        sid = r.json()["snapshot_id"]
        info = http.get(f"/snapshots/{sid}").json()
        assert info["sandbox_id"] == src["id"] and info["snapshot_type"] == "filesystem"
        assert info["cached_on"] == [src["node_id"]]
        assert sid in [s["snapshot_id"] for s in http.get("/snapshots").json()["snapshots"]]
        assert [s["snapshot_id"] for s in http.get(f"/sandboxes/{src['id']}/snapshots").json()["snapshots"]] == [sid]
        near = http.post("/sandboxes", json={"memory_mb": 256, "snapshot_id": sid}).json()
        assert near["status"] == "running" and near["node_id"] == src["node_id"], near  # it caches it: no download
        _node_state(cluster, src["node_id"], "draining")  # only the other node can take it now
        try:
            far = http.post("/sandboxes", json={"memory_mb": 256, "snapshot_id": sid}).json()
        finally:
            _node_state(cluster, src["node_id"], "alive")
        assert far["status"] == "running" and far["node_id"] != src["node_id"], far  # fetched and verified
        for sb in (near, far):
            assert cluster.run(sb["id"], "cat /root/f") == (200, "kept")
        assert sorted(http.get(f"/snapshots/{sid}").json()["cached_on"]) == ["node-1", "node-2"]
        assert http.delete(f"/snapshots/{sid}").json() == {}
        assert http.get(f"/snapshots/{sid}").json()["code"] == "SNAPSHOT_NOT_FOUND"
        r = http.post("/sandboxes", json={"memory_mb": 256, "snapshot_id": sid})
        assert r.status_code == 404 and r.json()["code"] == "SNAPSHOT_NOT_FOUND"
        for sb in (src, near, far):
            assert http.delete(f"/sandboxes/{sb['id']}").json()["status"] == "terminated"


def test_copies_carry_memory_and_files(cluster: DevCluster) -> None:
    src = _create(cluster, name="orig")
    # A process whose state is only in memory: its copies go on counting from it.
    assert cluster.run("orig", "echo on-disk > /root/g; (i=100; while :; do i=$((i+1)); echo $i > /tmp/n; "
                               "sleep 0.2; done) >/dev/null 2>&1 &")[0] == 200
    with cluster.client() as http:
        r = http.post("/sandboxes/orig/copy?times=2")
        assert r.status_code == 200, r.text
        copies = r.json()["sandboxes"]
    assert r.json()["source_sandbox_id"] == src["id"] and len(copies) == 2
    for sb in copies:
        assert sb["status"] == "running" and sb["id"] != src["id"]
        assert cluster.run(sb["id"], "cat /root/g") == (200, "on-disk")
        code, out = cluster.run(sb["id"], "a=$(cat /tmp/n); sleep 1; b=$(cat /tmp/n); echo $a $b")
        a, b = map(int, out.split())
        assert code == 200 and a > 100 and b > a  # the counting process came along, and runs
    with cluster.client() as http:
        assert http.get("/snapshots").json()["snapshots"] == []  # the copy's snapshot is not a client's
        for sb in [*copies, src]:
            http.delete(f"/sandboxes/{sb['id']}")


def test_network_policy_patch(cluster: DevCluster) -> None:
    sb = _create(cluster)
    policy = {"allow_internet_access": False, "allow_out": ["10.240.0.1"]}
    with cluster.client() as http:
        r = http.patch(f"/sandboxes/{sb['id']}", json={"network": policy})
        assert r.status_code == 200, r.text
        assert r.json()["spec"]["network"] == {**policy, "deny_out": []}  # as validated, not as sent
        assert _local_doc(cluster, sb["id"])["extra"]["network_policy"]  # enforced on its node
        for body, code in [({"name": "x"}, "NOT_SUPPORTED"), ({"network": {"allow_out": ["not an ip/99"]}}, None),
                           ({"network": "all"}, None)]:
            r = http.patch(f"/sandboxes/{sb['id']}", json=body)
            assert r.status_code == 400, (body, r.text)
            assert code is None or r.json()["code"] == code
        r = http.patch(f"/sandboxes/{sb['id']}", json={"network": None})  # back to unrestricted
        assert r.status_code == 200, r.text
        assert "network_policy" not in _local_doc(cluster, sb["id"])["extra"]
        http.delete(f"/sandboxes/{sb['id']}")


def test_images_and_bad_input_and_other_projects(cluster: DevCluster) -> None:
    with cluster.client() as http:
        images = http.get("/images").json()["images"]
    # The nodes' OCI layouts are copies of this host's: the default image and whatever else is there.
    assert any(i["name"].startswith("cellbox/debian") and i["nodes"] == ["node-1", "node-2"] for i in images), images
    sb = _create(cluster)
    other = cluster.member_key("p9")
    with cluster.client() as http:
        sid = http.post(f"/sandboxes/{sb['id']}/snapshot", json={}).json()["snapshot_id"]
        for path, body in [(f"/sandboxes/{sb['id']}/snapshot", {"snapshot_type": "disk"}),
                           (f"/sandboxes/{sb['id']}/copy?times=0", None), (f"/sandboxes/{sb['id']}/copy?times=99", None)]:
            r = http.post(path, json=body)
            assert r.status_code in (400, 422) and r.status_code != 500, (path, r.text)
        r = http.post("/sandboxes", json={"snapshot_id": sid, "image": "cellbox/debian"})
        assert r.status_code == 400
        assert http.post("/sandboxes", json={"snapshot_id": 5}).status_code == 400
    with cluster.client(other) as http:
        assert http.get(f"/snapshots/{sid}").status_code == 404
        assert http.delete(f"/snapshots/{sid}").status_code == 404
        assert http.post("/sandboxes", json={"snapshot_id": sid}).status_code == 404
        assert http.get("/snapshots").json()["snapshots"] == []
        assert http.post(f"/sandboxes/{sb['id']}/snapshot", json={}).status_code == 404
        assert http.patch(f"/sandboxes/{sb['id']}", json={"network": None}).status_code == 404
    with cluster.client() as http:
        http.delete(f"/snapshots/{sid}")
        http.delete(f"/sandboxes/{sb['id']}")


def test_snapshot_quotas_hold_in_cluster_mode(cluster: DevCluster) -> None:
    """Count and bytes, as on one host: the count is checked in the transaction that
    queues the snapshot command (the command is the hold), the bytes again once the
    size is known; a refused snapshot leaves no catalog row. A copy's own snapshot is
    the platform's and does not count."""
    key = cluster.member_key("sq")
    with cluster.client() as admin:
        assert admin.put("/quotas/sq", json={"snapshots": 1}).status_code == 200
    with cluster.client(key) as http:
        r = http.post("/sandboxes", json={"memory_mb": 256})
        assert r.status_code == 201, r.text
        sb = r.json()["id"]
        try:
            first = http.post(f"/sandboxes/{sb}/snapshot", json={})
            assert first.status_code == 200, first.text
            r = http.post(f"/sandboxes/{sb}/snapshot", json={})
            assert r.status_code == 403 and r.json()["code"] == "QUOTA_EXCEEDED", r.text
            assert "quota snapshots is 1, 1 in use" in r.json()["error"]
            assert http.get(f"/sandboxes/{sb}").json()["status"] == "running"  # nothing queued, nothing half-made
            r = http.post(f"/sandboxes/{sb}/copy?times=1")  # not the client's snapshot: admitted
            assert r.status_code == 200, r.text
            for copy in r.json().get("sandboxes", []):
                http.delete(f"/sandboxes/{copy['id']}")
            assert http.delete(f"/snapshots/{first.json()['snapshot_id']}").status_code == 200
            with cluster.client() as admin:
                usage = admin.get("/quotas/sq").json()["usage"]
                assert usage["snapshots"] == 0 and usage["snapshot_bytes"] == 0, usage
                assert admin.put("/quotas/sq", json={"snapshots": None, "snapshot_bytes": 1}).status_code == 200
            r = http.post(f"/sandboxes/{sb}/snapshot", json={})  # under the bytes before; over once made
            assert r.status_code == 403 and "quota snapshot_bytes is 1, this snapshot would make it" in r.json()["error"]
            assert http.get("/snapshots").json()["snapshots"] == []
        finally:
            http.delete(f"/sandboxes/{sb}")
            with cluster.client() as admin:
                admin.put("/quotas/sq", json={"snapshots": None, "snapshot_bytes": None})


def _logs(http, ref: str, **params) -> list[dict]:
    r = http.get(f"/sandboxes/{ref}/logs", params=params)
    assert r.status_code == 200, r.text
    return r.json()["logs"]


def test_logs_are_read_from_the_sandboxs_node(cluster: DevCluster) -> None:
    """The single-host logs routes in cluster mode: lines from the node's agent with the
    same filters; other projects, a forged or missing read token, and a sandbox on no
    node get clear 4xx answers."""
    sb = _create(cluster, name="logged")
    assert cluster.run(sb["id"], "echo needle-A; echo needle-b >&2") == (200, "needle-A\nneedle-b")
    with cluster.client() as http:
        got = cluster.wait_for(lambda: [e for e in _logs(http, "logged", body="needle") if e["body"].startswith("needle")]
                               or None, 20, "the lines in the logs")
        assert [e["body"] for e in got] == ["needle-A", "needle-b"]
        assert {e["sandboxId"] for e in got} == {sb["id"]}  # the cluster's ID, not the node's
        assert [e["body"] for e in _logs(http, sb["id"], body="needle", level=["error"])] == ["needle-b"]
        procs = http.get(f"/sandboxes/{sb['id']}/processes").json()["processes"]
        assert any(p["processCommand"] == "sh" and p["logCount"] >= 2 for p in procs), procs
        assert http.get(f"/sandboxes/{sb['id']}/logs", params={"head": -1}).status_code == 400  # the same checks
        assert http.get("/sandboxes/nosuchbox/logs").status_code == 404
    with cluster.client(cluster.member_key("p8")) as http:
        assert http.get(f"/sandboxes/{sb['id']}/logs").status_code == 404
        assert http.get(f"/sandboxes/{sb['id']}/processes").status_code == 404
    # The node's internal port: only a replica's read token for this node, sandbox and project.
    from cellbox.cluster import nodeauth

    with psycopg.connect(cluster.dsn) as db:
        node, local, address, project = db.execute(
            "SELECT s.node_id, coalesce(s.local_id, s.id), n.address, s.project FROM sandboxes s "
            "JOIN nodes n ON n.id = s.node_id WHERE s.id = %s", (sb["id"],)).fetchone()
    key = bytes.fromhex((cluster.base / "control" / "cluster.key").read_text().strip())
    host, _, port = address.rpartition(":")
    url = f"http://{host}:{int(port) + 1}/sandboxes/{local}/log-lines"
    other_project = nodeauth.read_token(key, node, local, "p8")
    for token in (None, other_project, nodeauth.read_token(key, "node-9", local, project),
                  nodeauth.read_token(bytes(32), node, local, project), nodeauth.token(key, local, 9501)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for proj in (project, "p8"):
            r = httpx.get(url, params={"project": proj}, headers=headers, timeout=10)
            # p8's own token for p8 passes the check, and p8 has no such sandbox
            want = 404 if (token, proj) == (other_project, "p8") else 401
            assert r.status_code == want, (token, proj, r.text)
    r = httpx.get(url, params={"project": project}, timeout=10,
                  headers={"Authorization": f"Bearer {nodeauth.read_token(key, node, local, project)}"})
    assert r.status_code == 200 and any(ln[1] == "needle-A" for ln in r.json()["lines"])
    # Suspended to object storage: no agent to ask, and said so.
    with cluster.client() as http:
        assert http.post(f"/sandboxes/{sb['id']}/suspend").status_code in (200, 202)
        cluster.wait_for(lambda: http.get(f"/sandboxes/{sb['id']}").json()["status"] == "suspended", 60, "suspended")
        r = http.get(f"/sandboxes/{sb['id']}/logs")
        assert r.status_code == 409 and r.json()["code"] == "SANDBOX_NOT_RUNNING" and "cluster mode" in r.json()["error"]
