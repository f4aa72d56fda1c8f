"""Volumes through the real server: the catalog, mounts on create and on a running
sandbox, one writer / many readers, versions and forks, suspend/resume and clones by
reference, the size limit, and the 4xx a client gets for every bad request."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..sse import run_command
from .conftest import Api, agent_ip

pytestmark = pytest.mark.root


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


class Vols:
    """Creates volumes for one test; deletes its sandboxes, then its volumes."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.made: list[tuple[Api, str]] = []

    def create(self, api: Api | None = None, *, expect: int = 201, **body: Any) -> dict[str, Any]:
        api = api or self.api
        body.setdefault("name", unique("vol"))
        r = api.request("POST", "/volumes", json=body)
        assert r.status_code == expect, r.text
        if r.status_code == 201:
            self.made.append((api, r.json()["id"]))
        return r.json()  # type: ignore[no-any-return]

    def fork(self, ref: str, **body: Any) -> dict[str, Any]:
        body.setdefault("name", unique("fork"))
        r = self.api.request("POST", f"/volumes/{ref}/fork", json=body)
        assert r.status_code == 201, r.text
        self.made.append((self.api, r.json()["id"]))
        return r.json()  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        self.api.cleanup()  # sandboxes first: a mounted volume cannot be deleted
        with httpx.Client(timeout=120, headers=self.api.http.headers) as http:
            for api, vid in self.made:
                http.delete(f"{api.base}/volumes/{vid}")


@pytest.fixture
def vols(api: Api) -> Iterator[Vols]:
    v = Vols(api)
    try:
        yield v
    finally:
        v.cleanup()


def sh(settings: Any, sid: str, script: str) -> dict[str, Any]:
    with httpx.Client(base_url=f"http://{agent_ip(settings, sid)}:9501", timeout=90) as c:
        return run_command(c, "/bin/sh", ["-c", script], timeout=60)


def mount(name: str, path: str, **kw: Any) -> dict[str, Any]:
    return {"file_system_id": name, "mount_path": path, **kw}


def attach(api: Api, sid: str, body: dict[str, Any]) -> httpx.Response:
    return api.request("POST", f"/sandboxes/{sid}/file_systems", json=body)


def test_catalog_and_bad_requests(api: Api, vols: Vols):
    v = vols.create(size_mb=64)
    assert v["size_mb"] == 64 and v["status"] == "ready" and v["mounts"] == []
    assert vols.create(name=v["name"], expect=409)["code"] == "VOLUME_NAME_TAKEN"
    for bad in ({"name": "Bad Name!"}, {"name": ""}, {"name": "x", "size_mb": 0}, {"name": "x", "size_mb": 1 << 30},
                {"name": "x", "surprise": 1}):
        r = api.request("POST", "/volumes", json=bad)
        assert r.status_code == 400, (bad, r.text)
    assert [x["id"] for x in api.request("GET", "/volumes").json()["volumes"]].count(v["id"]) == 1
    got = api.request("GET", f"/volumes/{v['name']}").json()
    assert got["id"] == v["id"] and got["used_bytes"] >= 0
    # Another project sees nothing of it, by name or by ID.
    other = api.in_namespace(unique("proj"))
    for ref in (v["name"], v["id"]):
        assert other.request("GET", f"/volumes/{ref}").status_code == 404
        assert other.request("DELETE", f"/volumes/{ref}").status_code == 404
    assert api.request("GET", "/volumes/nosuchvolume").json()["code"] == "VOLUME_NOT_FOUND"


def test_one_writer_many_readers(api: Api, vols: Vols, settings):
    v = vols.create()
    a = api.create({"file_systems": [mount(v["name"], "/data")]})
    assert a["status"] == "running", a
    assert api.get(a["sandbox_id"])["file_systems"] == [
        {"file_system_id": v["name"], "mount_path": "/data", "read_only": False}]
    res = sh(settings, a["sandbox_id"], "echo hello > /data/f && id -u && stat -c %u /data/f")
    assert res["exit_code"] == 0 and res["out"].split() == ["0", "0"], res
    b = api.create({"file_systems": [mount(v["name"], "/mnt/v", read_only=True)]})
    res = sh(settings, b["sandbox_id"], "cat /mnt/v/f; echo x > /mnt/v/g")
    assert res["out"] == "hello" and res["exit_code"] != 0 and "Read-only file system" in res["err"], res
    # A second writer: 409 naming the holder, and no sandbox is left behind.
    r = api.request("POST", "/sandboxes", json={"file_systems": [mount(v["name"], "/data")]})
    assert r.status_code == 409 and r.json()["code"] == "VOLUME_IN_USE" and a["sandbox_id"] in r.json()["error"], r.text
    r = attach(api, b["sandbox_id"], mount(v["name"], "/rw"))
    assert r.status_code == 409 and a["sandbox_id"] in r.json()["error"]
    # Mounted: cannot be deleted. Detached from the writer: another may write.
    assert api.request("DELETE", f"/volumes/{v['name']}").status_code == 409
    r = api.request("DELETE", f"/sandboxes/{a['sandbox_id']}/file_systems", json={"mount_path": "/data"})
    assert r.status_code == 200 and r.json()["file_systems"] == [], r.text
    assert sh(settings, a["sandbox_id"], "test -e /data/f || echo gone")["out"] == "gone"
    assert attach(api, b["sandbox_id"], mount(v["name"], "/rw")).status_code == 200
    assert sh(settings, b["sandbox_id"], "echo w > /rw/g && cat /mnt/v/g")["out"] == "w"
    api.delete(b["sandbox_id"])  # its end releases both its mounts
    assert api.request("GET", f"/volumes/{v['id']}").json()["mounts"] == []


@pytest.mark.parametrize("path", ["/proc", "/proc/x", "/.cellbox", "/.cellbox/bin", "/sys/x", "/dev/shm/x",
                                  "/etc", "/etc/ssh", "/", "relative", "/a/../etc", "/a/./b", "/a//b", "/a/",
                                  "/a b", "/a:b", "/a\nb", "/" + "a" * 300])
def test_mount_path_tricks_are_400(api: Api, vols: Vols, path: str):
    v = vols.create()
    r = api.request("POST", "/sandboxes", json={"file_systems": [mount(v["name"], path)]})
    assert r.status_code == 400, (path, r.text)


def test_bad_mounts(api: Api, vols: Vols):
    v = vols.create()
    other = api.in_namespace(unique("proj"))
    theirs = vols.create(other)
    cases = [
        ([mount(theirs["name"], "/data")], 404), ([mount(theirs["id"], "/data")], 404),
        ([mount("nosuchvolume", "/data")], 404),
        ([mount(v["name"], "/data", snapshot_id="nosuchversion", read_only=True)], 404),
        ([mount(v["name"], "/data", snapshot_id="x")], 400),  # a version is read-only
        ([mount(v["name"], "/data", owner="1000")], 400),
        ([mount(v["name"], "/data", read_only="yes")], 400),
        ([mount(v["name"], "/data"), mount(v["name"], "/data2")], 400),
        ([mount(v["name"], "/data", read_only=True), {"file_system_id": v["name"], "mount_path": "/data/in"}], 400),
        (["not an object"], 400), ([{"mount_path": "/x"}], 400),
    ]
    for fs, status in cases:
        r = api.request("POST", "/sandboxes", json={"file_systems": fs})
        assert r.status_code == status, (fs, r.text)
    sid = api.create({})["sandbox_id"]
    assert attach(api, sid, mount(theirs["name"], "/x")).status_code == 404
    assert attach(api, sid, {"mount_path": "/x"}).status_code == 400
    r = api.request("DELETE", f"/sandboxes/{sid}/file_systems", json={"mount_path": "/nothing"})
    assert r.status_code == 404 and r.json()["code"] == "MOUNT_NOT_FOUND"
    assert other.request("POST", f"/sandboxes/{sid}/file_systems", json=mount(theirs["name"], "/x")).status_code == 404


def test_versions_and_forks(api: Api, vols: Vols, settings):
    v = vols.create()
    sid = api.create({"file_systems": [mount(v["name"], "/data")]})["sandbox_id"]
    assert sh(settings, sid, "echo one > /data/f")["exit_code"] == 0
    r = api.request("POST", f"/volumes/{v['name']}/snapshots", json={"message": "first"})
    assert r.status_code == 201, r.text
    ver = r.json()["snapshot_id"]
    assert sh(settings, sid, "echo two > /data/f")["exit_code"] == 0
    listed = api.request("GET", f"/volumes/{v['name']}/snapshots").json()["snapshots"]
    assert [(x["snapshot_id"], x["message"]) for x in listed] == [(ver, "first")]
    # Mount the version (read-only) beside the live head.
    reader = api.create({"file_systems": [mount(v["name"], "/old", snapshot_id=ver, read_only=True),
                                          mount(v["name"], "/now", read_only=True)]})["sandbox_id"]
    res = sh(settings, reader, "cat /old/f /now/f; touch /old/x")
    assert res["out"].split() == ["one", "two"] and "Read-only" in res["err"], res
    assert api.request("DELETE", f"/volumes/{v['name']}/snapshots/{ver}").status_code == 409  # mounted
    # A fork of the version: writable, its own, the origin untouched.
    f = vols.fork(v["name"], snapshot_id=ver)
    assert f["forked_from"] == {"volume_id": v["id"], "version_id": ver}
    fsid = api.create({"file_systems": [mount(f["name"], "/data")]})["sandbox_id"]
    assert sh(settings, fsid, "cat /data/f; echo three > /data/f; cat /data/f")["out"].split() == ["one", "three"]
    assert sh(settings, sid, "cat /data/f")["out"] == "two"
    api.delete(reader)
    assert api.request("DELETE", f"/volumes/{v['name']}/snapshots/{ver}").status_code == 200
    assert api.request("GET", f"/volumes/{v['name']}/snapshots").json()["snapshots"] == []


def test_suspend_resume_and_clone_keep_the_volume(api: Api, vols: Vols, settings):
    v = vols.create()
    name = unique("volmem")
    sid = api.create({"name": name, "file_systems": [mount(v["name"], "/data")]})["sandbox_id"]
    # A process with its cwd and an open file in the volume: CRIU must re-bind it.
    script = "echo kept > /data/f && cd /data && (sleep 600 < /data/f > /dev/null 2>&1 &) && echo ok"
    assert sh(settings, sid, script)["out"] == "ok"
    r = api.request("POST", f"/sandboxes/{name}/suspend", params={"wait_ms": 120000})
    assert r.status_code == 200 and r.json()["status"] == "suspended", r.text
    assert api.request("DELETE", f"/volumes/{v['name']}").status_code == 409  # a suspended sandbox holds it
    r = api.request("POST", f"/sandboxes/{name}/resume", params={"wait_ms": 120000})
    assert r.status_code == 200 and r.json()["status"] == "running", r.text
    res = sh(settings, sid, "cat /data/f && echo more >> /data/f && ls -l /proc/*/cwd | grep -c ' /data$'")
    assert res["exit_code"] == 0 and res["out"].split()[0] == "kept", res
    # A clone would be a second writer: 409, and nothing is dumped.
    r = api.request("POST", f"/sandboxes/{sid}/copy")
    assert r.status_code == 409 and r.json()["code"] == "VOLUME_IN_USE", r.text
    # In use (the sleeper's cwd and open file): not detached, or it would write on unheld.
    r = api.request("DELETE", f"/sandboxes/{sid}/file_systems", json={"mount_path": "/data"})
    assert r.status_code == 409 and r.json()["code"] == "VOLUME_BUSY", r.text
    assert sh(settings, sid, "pkill -x sleep; sleep 0.5; echo done")["out"] == "done"
    # Read-only, it is shared with the clone, by reference.
    assert api.request("DELETE", f"/sandboxes/{sid}/file_systems", json={"mount_path": "/data"}).status_code == 200
    assert attach(api, sid, mount(v["name"], "/ro", read_only=True)).status_code == 200
    r = api.request("POST", f"/sandboxes/{sid}/copy")
    assert r.status_code == 200, r.text
    clone = r.json()["sandboxes"][0]["sandbox_id"] if "sandboxes" in r.json() else r.json()["copies"][0]["sandbox_id"]
    api.made.append(f"{api.base}/sandboxes/{clone}")
    assert api.get(clone)["file_systems"] == [{"file_system_id": v["name"], "mount_path": "/ro", "read_only": True}]
    res = sh(settings, clone, "cat /ro/f; echo x > /ro/y")
    assert res["out"].split() == ["kept", "more"] and "Read-only" in res["err"], res


def test_size_limit_is_enospc_inside(api: Api, vols: Vols, settings):
    v = vols.create(size_mb=16)
    sid = api.create({"file_systems": [mount(v["name"], "/data")]})["sandbox_id"]
    res = sh(settings, sid, "dd if=/dev/zero of=/data/big bs=1M count=64 conv=fsync 2>&1; echo rc=$?")
    assert "rc=0" not in res["out"] and ("Disk quota exceeded" in res["out"] or "No space" in res["out"]), res
    # The host and the sandbox's own disk are unaffected.
    assert sh(settings, sid, "dd if=/dev/zero of=/root/ok bs=1M count=20 2>/dev/null && echo fine")["out"] == "fine"
    assert vols.create(size_mb=16)["status"] == "ready"


def test_second_writer_after_an_attach(api: Api, vols: Vols):
    v = vols.create()
    a = api.create({})["sandbox_id"]
    assert attach(api, a, mount(v["name"], "/data")).status_code == 200
    b = api.create({})["sandbox_id"]
    r = attach(api, b, mount(v["name"], "/w"))
    assert r.status_code == 409 and a in r.json()["error"], r.text


def test_volume_bytes_quota(api: Api, vols: Vols):
    """The door's ``volume_bytes`` limits the sum of a project's volume sizes (forks too)."""
    proj = api.in_namespace(unique("vq"))
    r = api.http.put(f"{api.server.url}/quotas/{proj.namespace}", json={"volume_bytes": 100 << 20})
    assert r.status_code == 200, r.text
    try:
        v = vols.create(proj, size_mb=60)
        r = proj.request("POST", "/volumes", json={"name": unique("big"), "size_mb": 60})
        assert r.status_code == 403 and r.json()["code"] == "QUOTA_EXCEEDED" and "volume_bytes" in r.json()["error"]
        r = proj.request("POST", f"/volumes/{v['name']}/fork", json={"name": unique("f")})
        assert r.status_code == 403
        assert vols.create(proj, size_mb=40)["size_mb"] == 40
        usage = api.http.get(f"{api.server.url}/quotas/{proj.namespace}").json()["usage"]
        assert usage["volume_bytes"] == 100 << 20
    finally:
        api.http.put(f"{api.server.url}/quotas/{proj.namespace}", json={"volume_bytes": None})
