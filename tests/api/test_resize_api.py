"""Live resize through the real server (issue 14 item 1): PATCH ``resources``.

Before this, every one of these PATCHes was 400 ``NOT_SUPPORTED``. The kernel's own
view is checked (cgroup files, the subvolume's qgroup, the bundle's ``config.json``),
not only what the API answers.
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import subprocess
import time

import httpx
import pytest

from cellbox import ids
from cellbox.config import Settings
from cellbox.manager.resize import memory_in_use_mb
from cellbox.runtime import cgroups
from cellbox.storage import rootfs

from ..keys import auth
from ..sse import run_command
from .conftest import Api, agent_ip

pytestmark = pytest.mark.root


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def patch(api: Api, ref: str, body: dict) -> httpx.Response:
    return api.request("PATCH", f"/sandboxes/{ref}", json=body)


def kernel_view(settings: Settings, sid: str) -> dict:
    """cpus, memory_mb and the qgroup's byte limit as the kernel holds them, and the bundle's."""
    lim = cgroups.limits(ids.cgroup_path(sid))
    out = subprocess.run(["btrfs", "qgroup", "show", "-ref", "--raw", str(rootfs.path(settings.pool, sid))],
                         capture_output=True, text=True, check=True).stdout
    # Row "0/<subvolid> rfer excl max_rfer max_excl": the subvolume's own qgroup.
    row = next(line.split() for line in out.splitlines() if line.startswith("0/"))
    cfg = json.loads((settings.sandboxes_dir / sid / "config.json").read_text())["linux"]["resources"]
    return {"cpus": lim["cpu_quota"] / lim["cpu_period"], "memory_mb": lim["memory_bytes"] >> 20,
            "max_rfer": int(row[3]), "bundle_memory_mb": cfg["memory"]["limit"] >> 20}


def run(settings: Settings, sid: str, *argv: str) -> dict:
    with httpx.Client(base_url=f"http://{agent_ip(settings, sid)}:9501", timeout=120) as a:
        out = run_command(a, argv[0], list(argv[1:]))
    assert out.get("exit_code") == 0, out
    return {"stdout": out["out"]}


def test_resize_in_place_and_generations(api: Api, settings: Settings):
    sid = api.create({"resources": {"cpus": 1, "memory_mb": 512, "disk_mb": 2048}})["sandbox_id"]
    run(settings, sid, "sh", "-c", "echo started > /tmp/marker")
    with httpx.Client(base_url=f"http://{agent_ip(settings, sid)}:9501", timeout=60) as a:
        assert a.post("/api/v1/processes", json={"command": "sleep", "args": ["600"]}).status_code == 201
    before = kernel_view(settings, sid)
    assert before["memory_mb"] == 512
    r = patch(api, sid, {"resources": {"cpus": 2, "memory_mb": 768, "disk_mb": 3072}})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["resources"] == {"cpus": 2.0, "memory_mb": 768, "disk_mb": 3072}
    assert info["resource_resize"] == {"generation": 1, "status": "succeeded", "error_message": None,
                                       "requested": {"cpus": 2.0, "memory_mb": 768, "disk_mb": 3072}}
    after = kernel_view(settings, sid)
    assert after["cpus"] == 2 and after["memory_mb"] == 768 and after["bundle_memory_mb"] == 768
    assert after["max_rfer"] == before["max_rfer"] + (1024 << 20)  # the disk grew by exactly 1 GiB
    # Not a restart: the process started before is still there, and so is its file.
    assert "started" in run(settings, sid, "cat", "/tmp/marker")["stdout"]
    assert "sleep" in run(settings, sid, "ps", "-eo", "comm")["stdout"]
    # One dimension only: the others keep their values; the generation goes up.
    r = patch(api, sid, {"resources": {"memory_mb": 640}})
    assert r.status_code == 200 and r.json()["resource_resize"]["generation"] == 2
    assert r.json()["resources"] == {"cpus": 2.0, "memory_mb": 640, "disk_mb": 3072}
    assert kernel_view(settings, sid)["memory_mb"] == 640
    assert api.get(sid)["resource_resize"]["generation"] == 2


def test_shrink_below_use_fails_and_changes_nothing(api: Api, settings: Settings):
    sid = api.create({"resources": {"memory_mb": 1024}})["sandbox_id"]
    # A process holding 300 MiB of anonymous memory: the kernel cannot reclaim it without swap.
    with httpx.Client(base_url=f"http://{agent_ip(settings, sid)}:9501", timeout=60) as a:
        hog = "import time; b = b'x' * (300 << 20); open('/tmp/held', 'w').close(); time.sleep(600)"
        assert a.post("/api/v1/processes", json={"command": "python3", "args": ["-c", hog]}).status_code == 201
    deadline = time.monotonic() + 60
    while memory_in_use_mb(sid) < 300:
        assert time.monotonic() < deadline, memory_in_use_mb(sid)
        time.sleep(0.2)
    r = patch(api, sid, {"resources": {"memory_mb": 128}})
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "RESIZE_BELOW_USE" and "holds" in r.json()["error"]
    assert api.get(sid)["resources"]["memory_mb"] == 1024 and "resource_resize" not in api.get(sid)
    assert kernel_view(settings, sid)["memory_mb"] == 1024
    assert "python3" in run(settings, sid, "ps", "-eo", "comm")["stdout"]  # nothing was killed


@pytest.mark.parametrize("resources, code", [
    ({"memory_mb": -5}, 400), ({"cpus": -1}, 400), ({"cpus": 0}, 400), ({"cpus": 1e9}, 400),
    ({"memory_mb": 2**31 - 1}, 400), ({"memory_mb": 10}, 400), ({"disk_mb": 1}, 400), ({"cpus": "lots"}, 400),
    ({}, 400), ({"gpus": [{"count": 1}]}, 400),
])
def test_bad_targets_are_400_and_change_nothing(api: Api, settings: Settings, resources, code):
    sid = api.create({"resources": {"memory_mb": 512}})["sandbox_id"]
    r = patch(api, sid, {"resources": resources})
    assert r.status_code == code, r.text
    assert "resources" in r.json()["error"]
    assert api.get(sid)["resources"]["memory_mb"] == 512 and kernel_view(settings, sid)["memory_mb"] == 512


def test_resize_mixed_with_other_fields_and_other_projects(api: Api):
    sid = api.create({})["sandbox_id"]
    r = patch(api, sid, {"resources": {"memory_mb": 512}, "name": unique("mix")})
    assert r.status_code == 400 and "cannot be combined with name" in r.json()["error"]
    # Another project's sandbox is a 404, never resized.
    other = httpx.post(f"{api.server.url}/keys", json={"project": unique("rz"), "role": "member"}, headers=auth())
    key = other.json()["key"]
    r = httpx.patch(f"{api.server.url}/sandboxes/{sid}", json={"resources": {"memory_mb": 2048}},
                    headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 404, r.text
    assert api.get(sid)["resources"]["memory_mb"] == 1024
    api.delete(sid)
    r = patch(api, sid, {"resources": {"memory_mb": 512}})
    assert r.status_code == 409 and r.json()["code"] == "SANDBOX_NOT_RUNNING"


def test_concurrent_resizes_settle_on_one(api: Api, settings: Settings):
    sid = api.create({"resources": {"memory_mb": 512}})["sandbox_id"]
    sizes = [512 + 32 * i for i in range(1, 9)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda m: patch(api, sid, {"resources": {"memory_mb": m}}), sizes))
    assert [a.status_code for a in answers] == [200] * 8
    gens = sorted(a.json()["resource_resize"]["generation"] for a in answers)
    assert gens == list(range(1, 9))  # one at a time: every resize its own generation
    final = api.get(sid)
    last = max(answers, key=lambda a: a.json()["resource_resize"]["generation"]).json()
    assert final["resources"]["memory_mb"] == last["resources"]["memory_mb"]
    assert kernel_view(settings, sid)["memory_mb"] == final["resources"]["memory_mb"]


def test_new_size_survives_suspend_resume_and_copy(api: Api, settings: Settings):
    name = unique("rz-keep")
    sid = api.create({"name": name, "resources": {"memory_mb": 512}})["sandbox_id"]
    assert patch(api, name, {"resources": {"memory_mb": 896, "cpus": 2}}).status_code == 200
    assert api.request("POST", f"/sandboxes/{name}/suspend", params={"wait_ms": 60000}).status_code == 200
    assert api.request("POST", f"/sandboxes/{name}/resume", params={"wait_ms": 60000}).status_code == 200
    assert api.get(sid)["resources"]["memory_mb"] == 896
    view = kernel_view(settings, sid)
    assert view["memory_mb"] == 896 and view["cpus"] == 2
    r = api.request("POST", f"/sandboxes/{sid}/copy")
    copies = [c["sandbox_id"] for c in r.json()["sandboxes"] if c.get("sandbox_id")]
    api.made += [f"{api.base}/sandboxes/{c}" for c in copies]
    assert r.status_code == 200, r.text
    assert api.get(copies[0])["resources"]["memory_mb"] == 896
    assert kernel_view(settings, copies[0])["memory_mb"] == 896
    snap = api.request("POST", f"/sandboxes/{sid}/snapshot", json={"snapshot_type": "filesystem"}).json()
    try:
        restored = api.create({"snapshot_id": snap["snapshot_id"]})["sandbox_id"]
        assert api.get(restored)["resources"]["memory_mb"] == 896
    finally:
        api.request("DELETE", f"/snapshots/{snap['snapshot_id']}")


def test_resize_respects_the_projects_quota(api: Api):
    project = unique("rzq")
    key = httpx.post(f"{api.server.url}/keys", json={"project": project, "role": "member"}, headers=auth()).json()
    assert httpx.put(f"{api.server.url}/quotas/{project}", json={"memory_mb": 1024, "vcpus": 2},
                     headers=auth()).status_code == 200
    own = api.in_namespace(project)
    own.http.headers["Authorization"] = f"Bearer {key['key']}"
    sid = own.create({"resources": {"memory_mb": 512, "cpus": 1}})["sandbox_id"]
    r = patch(own, sid, {"resources": {"memory_mb": 2048}})
    assert r.status_code == 403 and r.json()["code"] == "QUOTA_EXCEEDED" and "memory_mb" in r.json()["error"]
    assert own.get(sid)["resources"]["memory_mb"] == 512
    assert patch(own, sid, {"resources": {"memory_mb": 1024}}).status_code == 200  # exactly the quota: fine
    usage = httpx.get(f"{api.server.url}/quotas/{project}", headers=auth()).json()["usage"]
    assert usage["memory_mb"] == 1024 and usage["running_sandboxes"] == 1  # no hold left behind
