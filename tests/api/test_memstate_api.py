"""Suspend/resume, snapshots, restore and copy through the HTTP API (spec §2.5-§2.7)."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from .conftest import Api, agent_ip
from ..keys import auth

pytestmark = pytest.mark.root


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def agent(settings, sandbox_id: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://{agent_ip(settings, sandbox_id)}:9501", timeout=60)


def test_suspend_resume_with_wait_ms(api: Api, settings):
    name = unique("mem-api")
    sid = api.create({"name": name})["sandbox_id"]
    with agent(settings, sid) as a:
        assert a.put("/api/v1/files", params={"path": "/data/kept.txt"}, content=b"kept").status_code == 204
    r = api.request("POST", f"/sandboxes/{name}/suspend", params={"wait_ms": 60000})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "suspended" and r.json()["sandbox_url"] is None
    assert api.get(sid)["status"] == "suspended"
    # already suspended: settled at once
    assert api.request("POST", f"/sandboxes/{sid}/suspend", params={"wait_ms": 1000}).status_code == 200
    r = api.request("POST", f"/sandboxes/{sid}/resume", params={"wait_ms": 60000})
    assert r.status_code == 200 and r.json()["status"] == "running", r.text
    with agent(settings, sid) as a:
        assert a.get("/api/v1/files", params={"path": "/data/kept.txt"}).content == b"kept"


def test_suspend_without_wait_is_202_then_settles(api: Api):
    name = unique("mem-async")
    api.create({"name": name})
    r = api.request("POST", f"/sandboxes/{name}/suspend")
    assert r.status_code in (200, 202), r.text
    api.wait_status(name, "suspended")
    r = api.request("POST", f"/sandboxes/{name}/resume")
    assert r.status_code in (200, 202)
    api.wait_status(name, "running")


def test_suspend_ephemeral_is_400(api: Api):
    sid = api.create({})["sandbox_id"]
    r = api.request("POST", f"/sandboxes/{sid}/suspend", params={"wait_ms": 1000})
    assert r.status_code == 400 and r.json()["code"] == "SANDBOX_NOT_NAMED"
    # Resuming a running sandbox is settled at once (spec §2.5: 200 when already running).
    assert api.request("POST", f"/sandboxes/{sid}/resume").status_code == 200
    assert api.request("POST", "/sandboxes/nosuchsandbox-x/suspend").status_code == 404


def test_memory_snapshot_restore_and_delete(api: Api, settings):
    src = api.create({})["sandbox_id"]
    with agent(settings, src) as a:
        a.put("/api/v1/files", params={"path": "/data/f"}, content=b"snap")
        a.post("/api/v1/processes", json={"command": "sleep", "args": ["600"]})
    r = api.request("POST", f"/sandboxes/{src}/snapshot", json={"snapshot_type": "memory"})
    assert r.status_code == 200, r.text
    snap = r.json()["snapshot_id"]
    try:
        info = api.request("GET", f"/snapshots/{snap}").json()
        assert info["status"] == "completed" and info["snapshot_type"] == "memory" and info["sandbox_id"] == src
        assert snap in [s["id"] for s in api.request("GET", "/snapshots").json()["snapshots"]]
        assert [s["id"] for s in api.request("GET", f"/sandboxes/{src}/snapshots").json()["snapshots"]] == [snap]
        copy = api.create({"snapshot_id": snap})
        assert copy["status"] == "running", copy
        with agent(settings, copy["sandbox_id"]) as a:
            assert a.get("/api/v1/files", params={"path": "/data/f"}).content == b"snap"
            cmds = [p["command"] for p in a.get("/api/v1/processes").json()["processes"]]
            assert "sleep" in cmds  # the memory came back: the process is still there
        # snapshots outlive their sandbox
        api.delete(src)
        assert api.request("GET", f"/snapshots/{snap}").status_code == 200
    finally:
        assert api.request("DELETE", f"/snapshots/{snap}").status_code == 200
    assert api.request("GET", f"/snapshots/{snap}").status_code == 404
    assert api.create({"snapshot_id": "nosuchsnapshot"}, expect=404)["code"] == "SNAPSHOT_NOT_FOUND"


def test_copy_times_two(api: Api, settings):
    src = api.create({})["sandbox_id"]
    with agent(settings, src) as a:
        a.put("/api/v1/files", params={"path": "/data/f"}, content=b"orig")
    r = api.request("POST", f"/sandboxes/{src}/copy", params={"times": 2})
    body = r.json()
    for c in body.get("sandboxes", []):
        if c.get("sandbox_id"):
            api.made.append(f"{api.base}/sandboxes/{c['sandbox_id']}")
    assert r.status_code == 200, r.text
    assert body["source_sandbox_id"] == src and len(body["sandboxes"]) == 2
    ids_ = {c["sandbox_id"] for c in body["sandboxes"]}
    assert len(ids_) == 2 and src not in ids_
    for c in body["sandboxes"]:
        assert c["status"] == "running"
        with agent(settings, c["sandbox_id"]) as a:
            assert a.get("/api/v1/files", params={"path": "/data/f"}).content == b"orig"
    assert api.request("POST", f"/sandboxes/{src}/copy", params={"times": 0}).status_code == 400


def test_idle_named_sandbox_suspends_and_proxy_resumes_it(api: Api):
    name = unique("idle")
    sid = api.create({"name": name, "timeout_secs": 2})["sandbox_id"]
    api.wait_status(name, "suspended", timeout=30)
    # A proxy request wakes it and then goes through.
    t0 = time.monotonic()
    r = httpx.get(f"http://127.0.0.1:{api.server.proxy_port}/api/v1/health",
                  headers={"Host": f"{name}.local", **auth()}, timeout=60)
    assert r.json() == {"healthy": True}
    assert time.monotonic() - t0 < 10
    assert api.get(sid)["status"] == "running"
    # auto_resume can be switched off while suspended; then the proxy answers 503.
    api.wait_status(name, "suspended", timeout=30)
    assert api.request("PATCH", f"/sandboxes/{name}", json={"auto_resume": False}).status_code == 200
    assert api.get(name)["status"] == "suspended"
    r = httpx.get(f"http://127.0.0.1:{api.server.proxy_port}/api/v1/health",
                  headers={"Host": f"{name}.local", **auth()}, timeout=60)
    assert r.status_code == 503


def test_suspended_sandbox_survives_server_restart(api: Api, settings):
    name = unique("mem-restart")
    sid = api.create({"name": name})["sandbox_id"]
    with agent(settings, sid) as a:
        a.put("/api/v1/files", params={"path": "/data/f"}, content=b"durable")
    assert api.request("POST", f"/sandboxes/{name}/suspend", params={"wait_ms": 60000}).status_code == 200
    assert api.server.stop() == 0
    api.server.start()
    assert api.get(name)["status"] == "suspended"
    r = api.request("POST", f"/sandboxes/{name}/resume", params={"wait_ms": 60000})
    assert r.status_code == 200, r.text
    with agent(settings, sid) as a:
        assert a.get("/api/v1/files", params={"path": "/data/f"}).content == b"durable"


def test_crash_mid_suspend_is_settled_at_restart(api: Api, settings):
    """A server that died mid-capture leaves records reconciled from the host."""
    from cellbox.manager.records import Status
    from cellbox.manager.store import Store

    alive = unique("crash-alive")
    done = unique("crash-done")
    sid_alive = api.create({"name": alive})["sandbox_id"]
    sid_done = api.create({"name": done})["sandbox_id"]
    assert api.request("POST", f"/sandboxes/{done}/suspend", params={"wait_ms": 60000}).status_code == 200
    assert api.server.stop() == 0
    store = Store(settings.db_path)
    try:
        # "alive": the crash came before the dump (container still runs);
        # "done": it came after the image was complete, before the record said so.
        for sid in (sid_alive, sid_done):
            rec = store.get(sid)
            rec.status = Status.SUSPENDING
            rec.owner = "1:0"  # a process that is gone
            store.update(rec)
    finally:
        store.close()
        api.server.start()
    assert api.get(alive)["status"] == "running"
    with agent(settings, sid_alive) as a:
        assert a.get("/api/v1/health").json() == {"healthy": True}
    assert api.get(done)["status"] == "suspended"
    assert api.request("POST", f"/sandboxes/{done}/resume", params={"wait_ms": 60000}).status_code == 200


def test_copy_and_restore_of_a_tree_with_a_looping_etc_are_clear_errors(api: Api, settings):
    """A tenant's /etc that resolves nowhere (here a loop of relative links, which
    points at nothing outside the tree) makes copies and restores fail with a clear
    error naming it: 422 with ``ROOTFS_UNUSABLE`` per copy; a restore, like any
    create whose start fails, is a ``failed`` sandbox with the reason, its parts
    undone. The old code raised FileExistsError from ``write_identity``: a 500
    (walls, hole 1)."""
    from ..leaks import leftovers
    from ..sse import run_command

    src = api.create({})["sandbox_id"]
    with agent(settings, src) as a:
        res = run_command(a, "python3", ["-c", "import os; os.rename('/etc', '/etc0'); "
                                               "os.symlink('etc1', '/etc'); os.symlink('etc', '/etc1')"])
        assert res["exit_code"] == 0, res
    r = api.request("POST", f"/sandboxes/{src}/copy", params={"times": 1})
    assert r.status_code == 422, r.text
    [entry] = r.json()["sandboxes"]
    assert entry["status"] == "failed" and entry["reason"] == "ROOTFS_UNUSABLE", entry
    assert "/etc" in entry["error_details"]["message"] and "/var/lib" not in entry["error_details"]["message"]
    r = api.request("POST", f"/sandboxes/{src}/snapshot", json={"snapshot_type": "filesystem"})
    assert r.status_code == 200, r.text
    snap = r.json()["snapshot_id"]
    try:
        failed = api.create({"snapshot_id": snap})
        assert failed["status"] == "failed", failed
        assert "no usable /etc" in failed["error_details"]["message"], failed
        assert leftovers(settings, {failed["sandbox_id"]}) == {}
    finally:
        assert api.request("DELETE", f"/snapshots/{snap}").status_code == 200
