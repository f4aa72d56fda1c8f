"""Sandbox pools through the real server (issue 14 item 2, spec §2.8). Every route here
was a 404 before."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from ..keys import auth
from .conftest import Api

pytestmark = pytest.mark.root


def make_pool(api: Api, **body) -> str:
    body = {"image": "cellbox/debian", "resources": {"cpus": 1, "memory_mb": 1024}, **body}
    r = api.request("POST", "/sandbox-pools", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["namespace"] == api.namespace
    return r.json()["pool_id"]


@pytest.fixture
def pools(api: Api):
    made: list[tuple[Api, str]] = []

    def create(client: Api = api, **body) -> str:
        pid = make_pool(client, **body)
        made.append((client, pid))
        return pid

    yield create
    for client, pid in made:
        r = client.request("GET", f"/sandbox-pools/{pid}")
        for c in r.json().get("containers", []) if r.status_code == 200 else []:
            if c["sandbox_id"]:
                client.delete(c["sandbox_id"])
        client.request("DELETE", f"/sandbox-pools/{pid}")


def wait_idle(api: Api, pid: str, n: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = api.request("GET", f"/sandbox-pools/{pid}").json()
        if sum(c["state"] == "Idle" for c in info["containers"]) >= n:
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.2)


def test_pool_lifecycle_and_warm_claim(api: Api, pools):
    pid = pools(warm_containers=1, max_containers=2, timeout_secs=0,
                network={"allow_internet_access": False, "allow_out": [], "deny_out": []})
    info = wait_idle(api, pid, 1)
    assert info["image"] == "cellbox/debian" and info["warm_containers"] == 1 and info["max_containers"] == 2
    assert info["resources"] == {"cpus": 1.0, "memory_mb": 1024, "disk_mb": 0}
    assert info["network_policy"]["allow_internet_access"] is False
    assert pid in [p["id"] for p in api.request("GET", "/sandbox-pools").json()["pools"]]
    r = api.request("POST", f"/sandbox-pools/{pid}/sandboxes")
    assert r.status_code == 200, r.text
    sid = r.json()["sandbox_id"]
    assert r.json()["status"] == "running"
    got = api.get(sid)
    assert got["pool_id"] == pid and got["resources"]["memory_mb"] == 1024 and got["resources"]["cpus"] == 1.0
    assert got["network_policy"]["allow_internet_access"] is False
    # It was the warm one: the pool shows it running and refills in the background.
    containers = api.request("GET", f"/sandbox-pools/{pid}").json()["containers"]
    assert {"id": sid, "state": "Running", "sandbox_id": sid, "executor_id": "local"} in containers
    # A second claim (maybe cold), then the pool is at capacity.
    sid2 = api.request("POST", f"/sandbox-pools/{pid}/sandboxes").json()["sandbox_id"]
    r = api.request("POST", f"/sandbox-pools/{pid}/sandboxes")
    assert r.status_code == 409 and r.json()["code"] == "POOL_AT_CAPACITY"
    # In use: not deletable; after its sandboxes are gone it is.
    r = api.request("DELETE", f"/sandbox-pools/{pid}")
    assert r.status_code == 409 and r.json()["code"] == "POOL_IN_USE"
    api.delete(sid), api.delete(sid2)
    # Update is a full replace; network absent keeps the policy.
    r = api.request("PUT", f"/sandbox-pools/{pid}", json={"image": "cellbox/debian",
                                                          "resources": {"cpus": 1, "memory_mb": 768}})
    assert r.status_code == 200, r.text
    assert r.json()["resources"]["memory_mb"] == 768 and r.json()["warm_containers"] == 0
    assert r.json()["network_policy"]["allow_internet_access"] is False
    r = api.request("PUT", f"/sandbox-pools/{pid}", json={"image": "cellbox/debian", "network": None})
    assert r.status_code == 200 and r.json()["network_policy"] is None
    assert api.request("DELETE", f"/sandbox-pools/{pid}").status_code == 200
    assert api.request("GET", f"/sandbox-pools/{pid}").status_code == 404


def test_another_project_cannot_see_or_claim_a_pool(api: Api, pools):
    pid = pools()
    project = f"pool-{secrets.token_hex(3)}"
    key = httpx.post(f"{api.server.url}/keys", json={"project": project, "role": "member"}, headers=auth()).json()
    other = {"Authorization": f"Bearer {key['key']}"}
    for method, path in [("GET", f"/sandbox-pools/{pid}"), ("POST", f"/sandbox-pools/{pid}/sandboxes"),
                         ("PUT", f"/sandbox-pools/{pid}"), ("DELETE", f"/sandbox-pools/{pid}")]:
        r = httpx.request(method, f"{api.server.url}{path}", headers=other, json={"image": "cellbox/debian"})
        assert r.status_code == 404 and r.json()["code"] == "POOL_NOT_FOUND", (method, r.text)
    assert httpx.get(f"{api.server.url}/sandbox-pools", headers=other).json() == {"pools": []}
    r = httpx.get(f"{api.server.url}/v1/namespaces/default/sandbox-pools", headers=other)
    assert r.status_code == 404  # another project's namespace
    assert api.request("GET", f"/sandbox-pools/{pid}").status_code == 200  # untouched


@pytest.mark.parametrize("body, needle", [
    ({}, "image"), ({"image": "no-such-image-xyz"}, "no-such-image-xyz"),
    ({"image": "cellbox/debian", "warm_containers": 500}, "warm_containers"),
    ({"image": "cellbox/debian", "resources": {"memory_mb": 5}}, "memory_mb"),
    ({"image": "cellbox/debian", "resources": {"cpus": -1}}, "cpus"),
    ({"image": "cellbox/debian", "network": {"allow_out": ["not a host!"]}}, "allow_out"),
    ({"image": "cellbox/debian", "warm_containers": 2, "max_containers": 1}, "max_containers"),
])
def test_bad_pool_requests_are_4xx_and_store_nothing(api: Api, body, needle):
    before = api.request("GET", "/sandbox-pools").json()["pools"]
    r = api.request("POST", "/sandbox-pools", json=body)
    assert r.status_code in (400, 404), r.text
    assert needle in r.text
    assert api.request("GET", "/sandbox-pools").json()["pools"] == before


def test_claim_with_file_systems_is_refused(api: Api, pools):
    pid = pools()
    r = api.request("POST", f"/sandbox-pools/{pid}/sandboxes", json={"file_systems": [{"mount_path": "/x"}]})
    assert r.status_code == 400 and r.json()["code"] == "NOT_SUPPORTED"


def test_concurrent_claims_never_pass_max_containers(api: Api, pools):
    import concurrent.futures

    pid = pools(max_containers=2)
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda _: api.request("POST", f"/sandbox-pools/{pid}/sandboxes"), range(8)))
    ok = [a for a in answers if a.status_code == 200]
    assert len(ok) == 2, [a.status_code for a in answers]
    assert all(a.status_code == 409 and a.json()["code"] == "POOL_AT_CAPACITY" for a in answers if a not in ok)
    running = [c for c in api.request("GET", f"/sandbox-pools/{pid}").json()["containers"] if c["state"] == "Running"]
    assert len(running) == 2


def test_warm_sandboxes_count_against_the_projects_quota(api: Api, pools):
    project = f"poolq-{secrets.token_hex(3)}"
    key = httpx.post(f"{api.server.url}/keys", json={"project": project, "role": "member"}, headers=auth()).json()
    assert httpx.put(f"{api.server.url}/quotas/{project}", json={"running_sandboxes": 2, "memory_mb": 4096},
                     headers=auth()).status_code == 200
    own = api.in_namespace(project)
    own.http.headers["Authorization"] = f"Bearer {key['key']}"
    r = own.request("POST", "/sandbox-pools", json={"image": "cellbox/debian", "warm_containers": 3})
    assert r.status_code == 403 and r.json()["code"] == "QUOTA_EXCEEDED" and "running_sandboxes" in r.text
    pid = pools(own, warm_containers=2)  # exactly the quota: fine
    r = own.request("POST", "/sandbox-pools", json={"image": "cellbox/debian", "warm_containers": 1})
    assert r.status_code == 403  # the first pool holds the whole quota already
    r = own.request("PUT", f"/sandbox-pools/{pid}", json={"image": "cellbox/debian", "warm_containers": 1,
                                                          "resources": {"memory_mb": 8192}})
    assert r.status_code == 403 and "memory_mb" in r.text
    assert len(own.request("GET", "/sandbox-pools").json()["pools"]) == 1


def test_pool_survives_server_restart(api: Api, pools):
    pid = pools(warm_containers=1)
    wait_idle(api, pid, 1)
    assert api.server.stop() == 0  # its warm sandbox is torn down with the server
    api.server.start()
    wait_idle(api, pid, 1)  # rebuilt in the background once the server is up
    r = api.request("POST", f"/sandbox-pools/{pid}/sandboxes")
    assert r.status_code == 200 and r.json()["status"] == "running", r.text
