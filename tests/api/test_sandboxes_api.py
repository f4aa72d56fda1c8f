"""The lifecycle API against the real server: shapes, statuses, errors (spec §2)."""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import httpx
import pytest

from cellbox import ids

from .conftest import Api, agent_ip
from ..keys import auth

pytestmark = pytest.mark.root

INFO_KEYS = {
    "id", "namespace", "status", "resources", "image", "name", "timeout_secs", "created_at",
    "terminated_at", "termination_reason", "error_details", "exposed_ports", "allow_unauthenticated_access",
    "auto_resume", "sandbox_url", "file_systems",
}
WIRE_STATUSES = {"pending", "running", "snapshotting", "suspending", "suspended", "terminated", "timeout", "failed"}


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def test_blocking_create_is_running_with_sandbox_url(api: Api, settings):
    started = time.monotonic()
    created = api.create({"resources": {"cpus": 1.0, "memory_mb": 512}})
    elapsed = time.monotonic() - started
    assert created["status"] == "running", created
    assert ids.is_id(created["sandbox_id"])
    assert created["sandbox_url"] == api.server.proxy_url
    assert elapsed < 20

    info = api.get(created["sandbox_id"])
    assert INFO_KEYS <= set(info), INFO_KEYS - set(info)
    assert info["id"] == created["sandbox_id"]
    assert "sandbox_id" not in info  # an alias of id: the SDK rejects both at once
    assert info["namespace"] == "default" and info["status"] in WIRE_STATUSES
    assert info["resources"] == {"cpus": 1.0, "memory_mb": 512, "disk_mb": info["resources"]["disk_mb"]}
    assert isinstance(info["resources"]["disk_mb"], int) and info["resources"]["disk_mb"] > 0
    assert info["file_systems"] == [] and info["exposed_ports"] == [] and info["auto_resume"] is True
    assert info["name"] is None and info["terminated_at"] is None

    ip = agent_ip(settings, created["sandbox_id"])
    assert httpx.get(f"http://{ip}:9501/api/v1/health", timeout=10).json() == {"healthy": True}
    # Through the proxy, as the SDK does it with a localhost sandbox_url (spec §1.4).
    via_proxy = httpx.get(f"http://127.0.0.1:{api.server.proxy_port}/api/v1/health",
                          headers={"Host": f"{created['sandbox_id']}.local", **auth()}, timeout=10)
    assert via_proxy.json() == {"healthy": True}


def test_empty_body_and_defaults(api: Api):
    created = api.create(None, headers={})  # no budget header: block until done
    info = api.get(created["sandbox_id"])
    assert info["status"] == "running"
    assert info["resources"]["cpus"] == 1.0 and info["resources"]["memory_mb"] == 1024
    assert info["timeout_secs"] is None


def test_wait_false_answers_202_then_runs(api: Api):
    resp = api.request("POST", "/sandboxes", json={"wait": False, "name": unique("nowait")})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert ids.is_id(body["sandbox_id"]) and body["name"].startswith("nowait-")
    assert body["status"] == "pending" and body["pending_reason"] == "scheduling"
    assert "state" not in body  # an alias of status: the SDK rejects both at once
    info = api.wait_status(body["sandbox_id"], "running", "failed")
    assert info["status"] == "running" and info["sandbox_url"] == api.server.proxy_url


def test_tiny_budget_answers_pending_and_sdk_can_poll(api: Api):
    headers = {"X-Tensorlake-Request-Timeout-Ms": "1000", "X-Tensorlake-Request-Timeout-Grace-Ms": "1000"}
    body = api.create({}, headers=headers)
    assert body["status"] in ("pending", "running")
    assert api.wait_status(body["sandbox_id"], "running", "failed")["status"] == "running"


def test_get_by_id_and_by_name_on_both_path_styles(api: Api):
    name = unique("byname")
    sid = api.create({"name": name})["sandbox_id"]
    assert api.get(name)["id"] == sid
    assert api.get(sid)["name"] == name
    for path in (f"/sandboxes/{name}", f"/sandboxes/{sid}"):
        flat = httpx.get(api.server.url + path, headers={"Host": "sandbox.example", **auth()})
        assert flat.status_code == 200 and flat.json()["id"] == sid
    # Another namespace does not see it, by name or by ID.
    other = api.in_namespace(unique("other"))
    assert other.request("GET", f"/sandboxes/{name}").status_code == 404
    assert other.request("GET", f"/sandboxes/{sid}").status_code == 404


def test_list_filters_by_status_and_paginates(api: Api):
    ns = api.in_namespace(unique("list"))
    made = [ns.create({"resources": {"cpus": 0.5, "memory_mb": 256}})["sandbox_id"] for _ in range(3)]
    assert ns.delete(made[0]).status_code == 200

    live = ns.request("GET", "/sandboxes").json()  # by default: live sandboxes only
    assert [s["id"] for s in live["sandboxes"]] == made[1:] and "next_cursor" not in live
    everything = ns.request("GET", "/sandboxes", params={"status": "all"}).json()["sandboxes"]
    assert [s["id"] for s in everything] == made
    running = ns.request("GET", "/sandboxes", params={"status": "running"}).json()["sandboxes"]
    assert [s["id"] for s in running] == made[1:]
    ended = ns.request("GET", "/sandboxes", params={"status": "terminated,failed"}).json()["sandboxes"]
    assert [s["id"] for s in ended] == made[:1]
    assert ended[0]["termination_reason"] == "user_terminated"

    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": 1, "status": "all", **({"cursor": cursor} if cursor else {})}
        page = ns.request("GET", "/sandboxes", params=params).json()
        assert len(page["sandboxes"]) <= 1
        seen += [s["id"] for s in page["sandboxes"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == made

    bad = ns.request("GET", "/sandboxes", params={"status": "sleepy"})
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_REQUEST"
    bad = ns.request("GET", "/sandboxes", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and "cursor" in bad.json()["error"]


def test_duplicate_name_is_409(api: Api):
    name = unique("dup")
    api.create({"name": name})
    resp = api.request("POST", "/sandboxes", json={"name": name}, headers={})
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "NAME_TAKEN"


def test_patch_name_ports_and_flags(api: Api):
    sid = api.create({})["sandbox_id"]
    name = unique("renamed")

    resp = api.request("PATCH", f"/sandboxes/{sid}", json={"name": name})
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == name and api.get(name)["id"] == sid  # ephemeral became named

    resp = api.request("PATCH", f"/sandboxes/{name}", json={"exposed_ports": [8080, 3000, 8080],
                                                            "allow_unauthenticated_access": True,
                                                            "auto_resume": False})
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["exposed_ports"] == [3000, 8080]
    assert info["allow_unauthenticated_access"] is True and info["auto_resume"] is False
    assert api.request("PATCH", f"/sandboxes/{sid}", json={"exposed_ports": []}).json()["exposed_ports"] == []
    policy = {"allow_internet_access": True, "allow_out": [], "deny_out": ["192.0.2.0/24"]}
    resp = api.request("PATCH", f"/sandboxes/{sid}", json={"network": policy})
    assert resp.status_code == 200 and resp.json()["network_policy"] == policy, resp.text
    resp = api.request("PATCH", f"/sandboxes/{sid}", json={"name": name})  # network absent: kept
    assert resp.json()["network_policy"] == policy
    resp = api.request("PATCH", f"/sandboxes/{sid}", json={"network": None})
    assert resp.status_code == 200 and "network_policy" not in resp.json(), resp.text

    for body, code in [
        ({"exposed_ports": [9501]}, "INVALID_REQUEST"),
        ({"exposed_ports": [0]}, "INVALID_REQUEST"),
        ({"exposed_ports": [65536]}, "INVALID_REQUEST"),
        ({"name": "Not A Name"}, "INVALID_REQUEST"),
        ({"name": "a" * 21}, "INVALID_REQUEST"),
        ({"network": {"allow_out": ["300.1.2.3"]}}, "INVALID_REQUEST"),
        ({"network": {"deny_out": ["unresolvable.invalid"]}}, "UNRESOLVABLE_HOST"),
        ({"network": {"allow_out": "10.0.0.1"}}, "INVALID_REQUEST"),
        ({"resources": {"cpus": 2}, "name": "mixed-resize"}, "INVALID_REQUEST"),  # a resize stands alone
    ]:
        resp = api.request("PATCH", f"/sandboxes/{sid}", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["code"] == code, (body, resp.text)

    other = unique("taken")
    api.create({"name": other})
    resp = api.request("PATCH", f"/sandboxes/{sid}", json={"name": other})
    assert resp.status_code == 409 and resp.json()["code"] == "NAME_TAKEN"
    assert api.get(sid)["name"] == name


def test_delete_is_idempotent(api: Api):
    sid = api.create({})["sandbox_id"]
    first = api.delete(sid)
    assert first.status_code == 200 and first.json() == {}
    assert api.delete(sid).status_code == 200
    info = api.get(sid)
    assert info["status"] == "terminated" and info["terminated_at"] and info["sandbox_url"] is None
    # A terminated sandbox cannot be changed.
    resp = api.request("PATCH", f"/sandboxes/{sid}", json={"exposed_ports": [80]})
    assert resp.status_code == 409


def test_delete_pending_cancels(api: Api):
    resp = api.request("POST", "/sandboxes", json={"wait": False})
    assert resp.status_code == 202 and resp.json()["status"] == "pending", resp.text
    sid = resp.json()["sandbox_id"]
    assert api.delete(sid).status_code == 200
    info = api.get(sid)
    assert info["status"] == "terminated" and info["termination_reason"] == "cancelled"


def test_names_are_freed_by_delete(api: Api):
    name = unique("reuse")
    first = api.create({"name": name})["sandbox_id"]
    api.delete(first)
    second = api.create({"name": name})["sandbox_id"]
    assert second != first and api.get(name)["id"] == second


def test_unknown_sandbox_and_route_are_404(api: Api):
    for method in ("GET", "PATCH", "DELETE"):
        kwargs = {"json": {"exposed_ports": [80]}} if method == "PATCH" else {}
        for ref in ("0" * 21, "no-such-sandbox"):
            resp = api.request(method, f"/sandboxes/{ref}", **kwargs)
            assert resp.status_code == 404, (method, resp.text)
            assert resp.json()["code"] == "SANDBOX_NOT_FOUND"
    resp = api.request("GET", f"/sandboxes/{'0' * 21}/logs")
    assert resp.status_code == 404 and resp.json()["code"] == "SANDBOX_NOT_FOUND"
    resp = httpx.get(api.server.url + "/no/such/route", headers=auth())
    assert resp.status_code == 404 and resp.json()["code"] == "NOT_FOUND"
    resp = httpx.put(api.server.url + "/sandboxes", headers=auth())
    assert resp.status_code == 405 and resp.json()["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize(
    "content, status, code, words",
    [
        ({"resources": {"cpus": "lots"}}, 400, "INVALID_REQUEST", "resources.cpus"),
        ({"resources": {"cpus": -1}}, 400, "INVALID_REQUEST", "resources.cpus"),
        ({"resources": {"cpus": 0}}, 400, "INVALID_REQUEST", "resources.cpus"),
        ({"resources": {"cpus": 1000}}, 400, "INVALID_REQUEST", "cpus"),
        ({"resources": {"memory_mb": 1}}, 400, "INVALID_REQUEST", "memory_mb"),
        ({"resources": {"memory_mb": 10**30}}, 400, "INVALID_REQUEST", "memory_mb"),
        ({"resources": {"disk_mb": 5}}, 400, "INVALID_REQUEST", "disk_mb"),
        ({"resources": "big"}, 400, "INVALID_REQUEST", "resources"),
        ({"resources": {"gpus": [{"count": 1, "model": "H100"}]}}, 400, "NOT_SUPPORTED", "gpus"),
        ({"timeout_secs": -1}, 400, "INVALID_REQUEST", "timeout_secs"),
        ({"timeout_secs": "soon"}, 400, "INVALID_REQUEST", "timeout_secs"),
        ({"name": "Bad Name"}, 400, "INVALID_REQUEST", "name"),
        ({"name": 42}, 400, "INVALID_REQUEST", "name"),
        ({"exposed_ports": [9501]}, 400, "INVALID_REQUEST", "exposed_ports"),
        ({"exposed_ports": "80"}, 400, "INVALID_REQUEST", "exposed_ports"),
        ({"entrypoint": "sleep inf"}, 400, "INVALID_REQUEST", "entrypoint"),
        ({"wait": "maybe"}, 400, "INVALID_REQUEST", "wait"),
        ({"auto_resume": False}, 400, "INVALID_REQUEST", "auto_resume"),
        ({"network": {"deny_out": ["not a host"]}}, 400, "INVALID_REQUEST", "network.deny_out"),
        ({"network": {"allow_out": ["nosuch.invalid"]}}, 400, "UNRESOLVABLE_HOST", "nosuch.invalid"),
        ({"snapshot_id": "snap1"}, 404, "SNAPSHOT_NOT_FOUND", "snapshot"),
        ({"image": "no/such-image"}, 404, None, "no/such-image"),
        ([1, 2, 3], 400, "INVALID_REQUEST", ""),
        ("just a string", 400, "INVALID_REQUEST", ""),
        (b'{"resources": {', 400, "INVALID_REQUEST", "JSON"),
        (b"\xff\xfe", 400, "INVALID_REQUEST", ""),
        (b'{"name": "x"' + b" " * (2 << 20) + b"}", 413, "PAYLOAD_TOO_LARGE", "larger"),
    ],
)
def test_bad_create_bodies_are_4xx_json(api: Api, content, status, code, words):
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    resp = api.request("POST", "/sandboxes", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "code"} and body["error"], body
    if code:
        assert body["code"] == code, body
    assert words.lower() in body["error"].lower(), body


def test_chunked_huge_body_is_413(api: Api):
    def chunks():
        yield b'{"name": "x", "pad": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    resp = api.http.post(f"{api.base}/sandboxes", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_bad_namespace_and_query_are_400(api: Api):
    resp = httpx.get(api.server.url + "/v1/namespaces/bad%20ns/sandboxes", headers=auth())
    assert resp.status_code == 400 and resp.json()["code"] == "INVALID_REQUEST"
    resp = api.request("GET", "/sandboxes", params={"limit": "many"})
    assert resp.status_code == 400 and resp.json()["error"].startswith("limit:")
    resp = api.request("GET", "/sandboxes", params={"limit": 0})
    assert resp.status_code == 400


def test_ephemeral_timeout_terminates(api: Api):
    sid = api.create({"timeout_secs": 2})["sandbox_id"]
    named = api.create({"timeout_secs": 2, "name": unique("keep")})["sandbox_id"]
    info = api.wait_status(sid, "terminated", timeout=10)
    assert info["termination_reason"] == "timeout"
    # Named: the timeout means suspend when idle, never terminate (spec §4.2).
    assert api.wait_status(named, "suspended", timeout=30)["termination_reason"] is None


def test_dead_init_is_reported_failed(api: Api, settings):
    sid = api.create({})["sandbox_id"]
    subprocess.run(["runc", "--root", str(settings.runc_root), "kill", sid, "KILL"], check=True)
    info = api.wait_status(sid, "failed", timeout=10)
    assert info["termination_reason"] == "exited" and info["error_details"]["message"]
    assert info["sandbox_url"] is None
    assert api.delete(sid).status_code == 200  # still idempotent


def test_entrypoint_runs_as_a_process(api: Api, settings):
    sid = api.create({"entrypoint": ["/bin/sh", "-c", "echo started > /tmp/ep.txt; exec sleep 600"]})["sandbox_id"]
    info = api.get(sid)
    assert info["entrypoint"] == ["/bin/sh", "-c", "echo started > /tmp/ep.txt; exec sleep 600"]
    agent = f"http://{agent_ip(settings, sid)}:9501"
    procs = httpx.get(f"{agent}/api/v1/processes", timeout=10).json()["processes"]
    assert any(p["command"] == "/bin/sh" for p in procs), procs
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(f"{agent}/api/v1/files", params={"path": "/tmp/ep.txt"}, timeout=10)
        if r.status_code == 200:
            assert r.content == b"started\n"
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)


def test_logs_return_process_output(api: Api):
    sid = api.create({"entrypoint": ["/bin/sh", "-c", "echo hello-logs; echo oops >&2; exec sleep 600"]})["sandbox_id"]
    deadline = time.monotonic() + 10
    while True:
        body = api.request("GET", f"/sandboxes/{sid}/logs").json()
        if [e["body"] for e in body["logs"]][-2:] == ["hello-logs", "oops"]:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    entry = body["logs"][-1]
    assert entry["sandboxId"] == sid and isinstance(entry["timestamp"], int) and entry["namespace"] == "default"
    assert isinstance(entry["logAttributes"], str) and ["process.command", "/bin/sh"] in entry["resourceAttributes"]
    last = api.request("GET", f"/sandboxes/{sid}/logs", params={"tail": 1}).json()["logs"]
    assert [e["body"] for e in last] == ["oops"]
    assert api.request("GET", f"/sandboxes/{sid}/logs", params={"processId": 999999}).json()["logs"] == []
    api.delete(sid)
    # Kept past the end (issue 14): the terminated sandbox's output is still readable.
    kept = api.request("GET", f"/sandboxes/{sid}/logs").json()
    assert [e["body"] for e in kept["logs"]][-2:] == ["hello-logs", "oops"] and kept["nextToken"] is None
