"""Images per project through the real server (issue 12, gap 1).

Before this change every member saw, described and booted every project's images, and
could not make one of its own (the catalog was admin-only for writes): the first
test failed on the member's register (403) and on B's read of A's image (200).
"""

from __future__ import annotations

import time

import httpx

from ..api.conftest import SDK_CREATE_HEADERS, Api, ServerProcess, api, server  # noqa: F401
from ..keys import auth
from .test_door import Key, unique

DEFAULT_IMAGE = "cellbox/debian"


def _snapshot(own: Api, sid: str) -> str:
    snap = own.request("POST", f"/sandboxes/{sid}/snapshot", json={"snapshot_type": "filesystem"})
    assert snap.status_code in (200, 202), snap.text
    snap_id = snap.json()["snapshot_id"]
    deadline = time.monotonic() + 120
    while (st := own.request("GET", f"/snapshots/{snap_id}").json()["status"]) not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert st == "completed"
    return snap_id


def test_a_projects_image_is_its_own(server: ServerProcess, api: Api):
    a, b = Key(server, unique("ia")), Key(server, unique("ib"))
    own_a, own_b = a.api(api.made), b.api(api.made)
    name = unique("img")
    sid = own_a.create({})["sandbox_id"]
    snap = _snapshot(own_a, sid)
    try:
        made = own_a.request("POST", "/images/register", json={"name": name, "snapshot_id": snap})
        assert made.status_code == 200, made.text
        canon = made.json()["name"]
        assert canon in own_a.request("GET", "/images").text
        # B: not listed, not described, not bootable, not changeable; by flat and namespaced paths.
        for prefix in ("", f"/v1/namespaces/{b.project}"):
            assert canon not in b.get(f"{prefix}/images").text
            assert canon not in b.get(f"{prefix}/sandbox-templates").text
            assert b.get(f"{prefix}/images/{name}").status_code == 404
            assert b.get(f"{prefix}/sandbox-templates/by-name/{name}").status_code == 404
            assert httpx.delete(f"{server.url}{prefix}/images/{name}", headers=b.headers).status_code == 404
            assert httpx.put(f"{server.url}{prefix}/images/{name}/warm-pool", json={"size": 1},
                             headers=b.headers).status_code == 404
            assert b.post(f"{prefix}/images/{name}/preboot", json={}).status_code == 404
        boot = own_b.request("POST", "/sandboxes", json={"image": name}, headers=SDK_CREATE_HEADERS)
        assert boot.status_code == 404 and boot.json()["code"] == "IMAGE_NOT_FOUND", boot.text
        # Taking over the name from B is refused without telling it more than "taken".
        b_sid = own_b.create({})["sandbox_id"]
        b_snap = _snapshot(own_b, b_sid)
        taken = own_b.request("POST", "/images/register", json={"name": name, "snapshot_id": b_snap})
        assert taken.status_code == 409 and taken.json()["code"] == "IMAGE_EXISTS", taken.text
        # Public images: B reads and boots the default one, cannot delete it.
        assert b.get(f"/images/{DEFAULT_IMAGE}").status_code == 200
        gone = httpx.delete(f"{server.url}/images/{DEFAULT_IMAGE}", headers=b.headers)
        assert gone.status_code == 403 and gone.json()["code"] == "ADMIN_REQUIRED"
        assert b.post("/images/prune").status_code == 403
        # A boots its image, then deletes it.
        booted = own_a.create({"image": name})["sandbox_id"]
        assert own_a.request("DELETE", f"/sandboxes/{booted}").status_code == 200
        deadline = time.monotonic() + 60
        while (rm := own_a.request("DELETE", f"/images/{name}")).status_code == 409:
            assert time.monotonic() < deadline, rm.text
            time.sleep(0.5)
        assert rm.status_code == 200, rm.text
        assert own_a.request("GET", f"/images/{name}").status_code == 404
    finally:
        httpx.delete(f"{server.url}/images/{name}", headers=auth(), timeout=60)
        for key, s in ((a, snap), (b, locals().get("b_snap"))):
            if s:
                httpx.delete(f"{server.url}/v1/namespaces/{key.project}/snapshots/{s}", headers=auth(), timeout=60)
