"""A real two-node cluster (scripts/cluster-dev.sh): nodes in their own network
namespaces running real sandboxes, a control plane, PostgreSQL. Placement, the data
path through the proxy onto the right node, a hostile client, fencing of a node that
stalled, and a node killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cellbox.cluster import nodeauth

from .devcluster import DevCluster
from .pg import _bindir, free_port

pytestmark = pytest.mark.root
LEASE_S = 6.0
PG_CTL = [str(_bindir() / "pg_ctl")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[DevCluster]:
    c = DevCluster.up(2)
    try:
        yield c
    finally:
        c.down()
    # Nothing of ours left: namespaces, bridge, mounts, the PostgreSQL server.
    assert "cbx-node-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", "cxdev0"], capture_output=True).returncode != 0
    assert str(c.base) not in open("/proc/mounts").read()
    assert not c.base.exists()


def _create(c: DevCluster, **spec) -> dict:
    with c.client() as http:
        r = http.post("/sandboxes", json={"memory_mb": 256, **spec})
    assert r.status_code == 201, r.text
    return r.json()


def test_creates_spread_over_both_nodes_and_the_proxy_reaches_each(cluster: DevCluster) -> None:
    a, b = _create(cluster), _create(cluster)
    assert a["status"] == b["status"] == "running"
    assert {a["node_id"], b["node_id"]} == {"node-1", "node-2"}  # best-of-2 of 2 nodes: the emptier
    for sb in (a, b):  # a request routed to the wrong node would be that node's 404
        assert cluster.run(sb["id"], "cat /etc/hostname") == (200, sb["id"])
    with cluster.client() as http:
        ids = {s["id"] for s in http.get("/sandboxes").json()["sandboxes"]}
        assert {a["id"], b["id"]} <= ids
        for sb in (a, b):
            assert http.delete(f"/sandboxes/{sb['id']}").json()["status"] == "terminated"
        assert cluster.run(a["id"], "true")[0] == 410  # gone: the proxy says so, not a node


def test_a_node_takes_only_the_control_planes_token(cluster: DevCluster) -> None:
    """The node's data path without the token, with a forged one, or with a token for
    another sandbox: 401, before anything reaches a sandbox."""
    a, b = _create(cluster), _create(cluster)
    node = a["node_id"][-1]
    url = f"http://10.240.0.1{node}:9443/api/v1/processes"
    key = bytes.fromhex((cluster.base / "cluster.key").read_text().strip())
    wrong = bytes(32)
    cases = {
        "no token": {},
        "the client's API key": cluster.auth(),
        "forged token": {"Authorization": f"Bearer {nodeauth.token(wrong, a['id'], 9501)}"},
        "another sandbox's token": {"Authorization": f"Bearer {nodeauth.token(key, b['id'], 9501)}"},
        "another port's token": {"Authorization": f"Bearer {nodeauth.token(key, a['id'], 8080)}"},
        "expired token": {"Authorization": f"Bearer {nodeauth.token(key, a['id'], 9501, now=1)}"},
    }
    for what, headers in cases.items():
        r = subprocess.run(["ip", "netns", "exec", f"cbx-node-{node}", "curl", "-s", "-o", "/dev/null", "-w",
                            "%{http_code}", "-H", f"Host: {a['id']}.local",
                            *[x for k, v in headers.items() for x in ("-H", f"{k}: {v}")], url],
                           capture_output=True, text=True, timeout=60)
        assert r.stdout == "401", what
    good = {"Authorization": f"Bearer {nodeauth.token(key, a['id'], 9501)}"}  # the control: it works
    r = subprocess.run(["ip", "netns", "exec", f"cbx-node-{node}", "curl", "-s", "-o", "/dev/null", "-w",
                        "%{http_code}", "-H", f"Host: {a['id']}.local", "-H",
                        f"Authorization: {good['Authorization']}", url], capture_output=True, text=True)
    assert r.stdout == "200"
    with cluster.client() as http:
        for sb in (a, b):
            http.delete(f"/sandboxes/{sb['id']}")


def test_another_project_and_bad_input(cluster: DevCluster) -> None:
    mine = _create(cluster, name="mine")
    other = cluster.member_key("p2")
    with cluster.client(other) as http:
        assert http.get(f"/sandboxes/{mine['id']}").status_code == 404
        assert http.get("/sandboxes/mine").status_code == 404
        assert http.delete(f"/sandboxes/{mine['id']}").status_code == 404
        assert http.post(f"/sandboxes/{mine['id']}/suspend").status_code == 404
        assert mine["id"] not in {s["id"] for s in http.get("/sandboxes").json()["sandboxes"]}
    assert cluster.run(mine["id"], "true", key=other)[0] == 404
    with cluster.client(other) as http:  # p2's own sandbox: p2 reaches it by name, the admin by ID only
        theirs = http.post("/sandboxes", json={"memory_mb": 256, "name": "theirs"}).json()
    assert theirs["project"] == "p2"
    assert cluster.run("theirs", "echo p2", key=other) == (200, "p2")
    assert cluster.run(theirs["id"], "echo admin") == (200, "admin")
    assert cluster.run("theirs", "true")[0] == 404  # the admin's own project has no such name
    with cluster.client(other) as http:
        assert http.delete("/sandboxes/theirs").json()["status"] == "terminated"
    with cluster.client() as http:
        before = len(http.get("/sandboxes").json()["sandboxes"])
        for body, code in [({"nope": 1}, 400), ({"memory_mb": "256"}, 400), ({"memory_mb": 10**9}, 400),
                           ({"name": "../etc"}, 400), ({"name": "mine"}, 409), ({"cpus": True}, 400)]:
            r = http.post("/sandboxes", json=body)
            assert r.status_code == code, (body, r.text)
            assert "error" in r.json()
        assert http.post("/sandboxes", content=b"[1]").status_code == 400
        assert http.post("/sandboxes", content=b"{" * (70 << 10)).status_code == 400
        assert len(http.get("/sandboxes").json()["sandboxes"]) == before  # no half-made object
        assert http.get("/sandboxes", headers={"Authorization": "Bearer cbx_nope"}).status_code == 401
        assert http.delete("/sandboxes/mine").json()["status"] == "terminated"


def test_suspend_and_resume_a_named_sandbox_on_its_node(cluster: DevCluster) -> None:
    sb = _create(cluster, name="keep")
    assert cluster.run("keep", "echo 42 > /root/state && cat /root/state") == (200, "42")
    with cluster.client() as http:
        r = http.post("/sandboxes/keep/suspend")
        assert r.json()["status"] == "suspended" and r.json()["snapshot_id"], r.text
        again = http.post("/sandboxes/keep/suspend")  # idempotent, as on one host: no command queued
        assert again.status_code == 200 and again.json()["generation"] == 2
        r = http.post("/sandboxes/keep/resume")
        assert r.json()["status"] == "running", r.text
        assert r.json()["generation"] == 3 and r.json()["node_id"] == sb["node_id"]  # its cache wins
        assert http.post("/sandboxes/keep/resume").status_code == 400  # running: not suspended
        assert cluster.run("keep", "cat /root/state") == (200, "42")
        assert http.post("/sandboxes/keep/suspend").json()["status"] == "suspended"
        # A request through the proxy resumes it (auto-resume through the scheduler) and waits.
        assert cluster.run("keep", "cat /root/state") == (200, "42")
        assert http.get("/sandboxes/keep").json()["status"] == "running"
        http.delete(f"/sandboxes/{sb['id']}")


def test_a_stalled_node_is_fenced_and_drops_what_it_no_longer_owns(cluster: DevCluster) -> None:
    """SIGSTOP a node past its lease: the reaper fails its sandbox; on SIGCONT its
    heartbeat is refused, it rejoins under a new epoch and destroys its local copy."""
    with cluster.client() as http:
        placed = [_create(cluster) for _ in range(2)]
        sb = next(s for s in placed if s["node_id"] == "node-1")
        pid = cluster.node_pid(1)
        os.kill(pid, signal.SIGSTOP)
        try:
            got = cluster.wait_for(lambda: (r := http.get(f"/sandboxes/{sb['id']}").json())["status"] == "failed"
                                   and r, 6 * LEASE_S, "the stalled node's sandbox failed")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert got["reason"].startswith("node_lost") and got["node_id"] is None
        assert cluster.local_status(1, sb["id"]) == "running"  # the stalled node still had it...
        cluster.wait_for(lambda: cluster.local_status(1, sb["id"]) == "terminated", 6 * LEASE_S,
                         "the fenced node destroyed its local copy")  # ...until it learnt it was fenced
        again = _create(cluster)  # and it takes new work under its new epoch
        assert again["status"] == "running"
        for s in [*placed, again]:
            http.delete(f"/sandboxes/{s['id']}")


def _retrying(c: DevCluster, method: str, path: str, **kw) -> httpx.Response:
    """A client that retries the 503 the API answers while the database is away."""
    with c.client() as http:
        for _ in range(30):
            r = http.request(method, path, **kw)
            if r.status_code != 503:
                return r
            time.sleep(1)
    return r


def test_postgres_restart_loses_nothing(cluster: DevCluster) -> None:
    sb = _create(cluster, name="survivor")
    # -l: without a log file the new postmaster would hold our stdout pipe open forever
    subprocess.run(["runuser", "-u", "postgres", "--", *PG_CTL, "-D", str(cluster.base / "pg" / "data"), "-l",
                    str(cluster.base / "pg" / "log"), "-m", "fast", "-w", "restart"], check=True,
                   capture_output=True, timeout=120)
    r = _retrying(cluster, "GET", f"/sandboxes/{sb['id']}")  # a 503 at most, then the same row
    assert r.status_code == 200 and r.json()["status"] == "running", r.text
    r = _retrying(cluster, "POST", "/sandboxes", json={"memory_mb": 256})
    assert r.status_code == 201 and r.json()["status"] == "running", r.text  # nodes reconnected and claim
    assert cluster.run("survivor", "echo ok") == (200, "ok")
    for ref in (sb["id"], r.json()["id"]):
        assert _retrying(cluster, "DELETE", f"/sandboxes/{ref}").status_code == 200


def test_a_control_plane_replica_killed_another_serves_on(cluster: DevCluster) -> None:
    """Stateless replicas: kill -9 the one that created a sandbox; a second replica
    (started here, same database) serves it, its proxy routes to it, its sweep reaps."""
    sb = _create(cluster, name="replicated")
    api, proxy = free_port(), free_port()
    env = {**cluster.env, "CELLBOX_DATA_DIR": str(cluster.base / "control")}
    dsn = f"postgresql://postgres@127.0.0.1:{cluster.env['CLUSTER_PG_PORT']}/cellbox"
    second = subprocess.Popen([str(Path(sys.executable).parent / "cellbox"), "server", "--cluster", dsn,
                               "--api-port", str(api), "--proxy-port", str(proxy)], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(cluster.base / "control2.log", "w"))
    os.kill(int((cluster.base / "control.pid").read_text()), signal.SIGKILL)
    (cluster.base / "control.pid").write_text(str(second.pid))  # the script's down stops this one now
    cluster.api, cluster.proxy = f"http://127.0.0.1:{api}", f"http://127.0.0.1:{proxy}"
    cluster.wait_for(lambda: _up(cluster.api), 60, "the second replica serves")
    with cluster.client() as http:
        assert http.get("/sandboxes/replicated").json()["status"] == "running"
        assert cluster.run("replicated", "echo there") == (200, "there")
        assert http.delete(f"/sandboxes/{sb['id']}").json()["status"] == "terminated"


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _counting(c: DevCluster, ref: str) -> None:
    """A process that keeps counting in the sandbox: its memory must survive a move."""
    r = httpx.post(f"{c.proxy}/api/v1/processes", headers={**c.auth(), "Host": f"{ref}.local"}, timeout=60,
                   json={"command": "sh", "args": ["-c", "i=0; while :; do i=$((i+1)); echo $i > /root/n; "
                                                         "sleep 0.2; done"]})
    assert r.status_code == 201, r.text


def _count(c: DevCluster, ref: str) -> int:
    code, out = c.run(ref, "cat /root/n")
    assert code == 200, out
    return int(out)


def _tamper(c: DevCluster, digest: str) -> None:
    """Overwrite the CRIU images' blob of a suspend image in the bucket (an attacker
    with write access to the object store)."""
    import boto3
    s3 = boto3.client("s3", endpoint_url=f"http://10.240.0.1:{c.env['CLUSTER_S3_PORT']}", region_name="us-east-1",
                      aws_access_key_id="cellbox-dev", aws_secret_access_key="cellbox-dev")
    doc = json.loads(s3.get_object(Bucket="cellbox", Key=f"manifests/{digest}.json")["Body"].read())
    mem = next(b for b in doc["manifest"]["blobs"] if b["name"] == "mem.tar")
    s3.put_object(Bucket="cellbox", Key=f"blobs/sha256/{mem['digest']}", Body=b"attacker's pages")


def test_drain_moves_named_sandboxes_off_a_node(cluster: DevCluster) -> None:
    """cellbox node drain: the running named sandbox goes on on the other node, counting;
    the ephemeral one moves too (live migration); nothing new lands there."""
    placed = [_create(cluster, name=f"drain{i}") for i in range(2)] + [_create(cluster) for _ in range(2)]
    named = next(s for s in placed if s["name"] and s["node_id"] == "node-1")
    eph = next(s for s in placed if not s["name"] and s["node_id"] == "node-1")
    _counting(cluster, named["id"])
    cluster.wait_for(lambda: _count(cluster, named["id"]) > 3, 60, "the counter runs")
    dsn = f"postgresql://postgres@127.0.0.1:{cluster.env['CLUSTER_PG_PORT']}/cellbox"
    cli = [str(Path(sys.executable).parent / "cellbox"), "node", "drain", "node-1", "--cluster", dsn]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"moved {named['id']} -> node-2" in out.stdout and f"moved {eph['id']} -> node-2" in out.stdout
    try:
        with cluster.client() as http:
            assert http.get(f"/sandboxes/{named['id']}").json()["node_id"] == "node-2"
            before = _count(cluster, named["id"])
            cluster.wait_for(lambda: _count(cluster, named["id"]) > before, 60, "counting on after the drain")
            assert _create(cluster)["node_id"] == "node-2"  # node-1 takes nothing new
            bad = subprocess.run([*cli[:3], "nope", *cli[4:]], capture_output=True, text=True, timeout=60)
            assert bad.returncode != 0 and "not found" in bad.stderr
    finally:
        subprocess.run([*cli, "--undo"], capture_output=True, timeout=60, check=True)
    with cluster.client() as http:
        for s in http.get("/sandboxes").json()["sandboxes"]:
            if s["status"] not in ("terminated", "failed"):
                http.delete(f"/sandboxes/{s['id']}")


def test_a_killed_node_fails_its_ephemeral_sandboxes_and_its_named_ones_resume_elsewhere(
        cluster: DevCluster) -> None:
    """kill -9 of a node: within a lease its ephemeral sandbox is failed with the
    reason; its suspended named ones resume on the other node from object storage,
    processes still counting - except the one whose image was tampered with."""
    with cluster.client() as http:
        placed = [_create(cluster, name=f"move{i}") for i in range(4)] + [_create(cluster) for _ in range(2)]
        on2 = [s for s in placed if s["node_id"] == "node-2"]
        moving, tampered = [s for s in on2 if s["name"]][:2]
        victim = next(s for s in on2 if not s["name"])
        _counting(cluster, moving["id"])
        cluster.wait_for(lambda: _count(cluster, moving["id"]) > 3, 60, "the counter runs")
        for s in (moving, tampered):
            r = http.post(f"/sandboxes/{s['id']}/suspend")
            assert r.json()["status"] == "suspended", r.text
        _tamper(cluster, http.get(f"/sandboxes/{tampered['id']}").json()["snapshot_id"])
        os.kill(cluster.node_pid(2), signal.SIGKILL)
        got = cluster.wait_for(lambda: (r := http.get(f"/sandboxes/{victim['id']}").json())["status"] == "failed"
                               and r, 6 * LEASE_S, "the dead node's sandbox failed")
        assert got["reason"].startswith("node_lost: node node-2")
        assert cluster.run(victim["id"], "true")[0] == 410
        lost = http.get(f"/sandboxes/{moving['id']}").json()
        assert lost["status"] == "suspended" and lost["node_id"] is None
        r = http.post(f"/sandboxes/{tampered['id']}/resume")
        assert r.status_code == 409 and r.json()["code"] == "ARTIFACT_TAMPERED", r.text
        assert http.get(f"/sandboxes/{tampered['id']}").json()["status"] == "suspended"  # refused, not half-made
        r = http.post(f"/sandboxes/{moving['id']}/resume")
        assert r.status_code == 200 and r.json()["status"] == "running", r.text
        assert r.json()["node_id"] == "node-1"
        first = _count(cluster, moving["id"])
        cluster.wait_for(lambda: _count(cluster, moving["id"]) > first, 60, "the counter goes on after the move")
        survivor = _create(cluster)  # placement skips the dead node
        assert survivor["node_id"] == "node-1"
        for s in [*placed, survivor]:
            assert http.delete(f"/sandboxes/{s['id']}").status_code == 200
