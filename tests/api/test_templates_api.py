"""Tensorlake's template catalog under its own ``/platform/v1`` paths (issue 14 item 6),
through the real server: all 404 before. Builds are not served (docs/api.md says why)."""

from __future__ import annotations

import secrets

import httpx
import pytest

from ..keys import auth
from .conftest import Api

pytestmark = pytest.mark.root


def test_platform_template_catalog(api: Api):
    base = f"{api.server.url}/platform/v1/sandbox-templates"
    items = httpx.get(base, headers=auth()).json()["items"]
    assert "cellbox/debian:latest" in [t["name"] for t in items]
    one = httpx.get(f"{base}/by-name/cellbox/debian", headers=auth())
    assert one.status_code == 200 and one.json()["name"] == "cellbox/debian:latest"
    # Register a sandbox's filesystem snapshot as a template, boot it, remove it.
    sid = api.create({})["sandbox_id"]
    snap = api.request("POST", f"/sandboxes/{sid}/snapshot", json={"snapshot_type": "filesystem"}).json()
    name = f"test/tpl-{secrets.token_hex(3)}"
    try:
        r = httpx.post(base, json={"name": name, "snapshotId": snap["snapshot_id"]}, headers=auth(), timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["name"].startswith(name)
        booted = api.create({"image": name})
        assert booted["status"] == "running"
        api.delete(booted["sandbox_id"])
        # A member reads the catalog but cannot change it (images are shared by all projects).
        key = httpx.post(f"{api.server.url}/keys", json={"project": f"tpl-{secrets.token_hex(3)}",
                                                           "role": "member"}, headers=auth()).json()
        member = {"Authorization": f"Bearer {key['key']}"}
        assert httpx.get(base, headers=member).status_code == 200
        r = httpx.delete(f"{base}/{name}", headers=member)
        assert r.status_code == 403 and r.json()["code"] == "ADMIN_REQUIRED"
        assert httpx.delete(f"{base}/{name}", headers=auth(), timeout=120).status_code == 200
        assert httpx.get(f"{base}/by-name/{name}", headers=auth()).status_code == 404
    finally:
        httpx.delete(f"{base}/{name}", headers=auth(), timeout=120)
        api.request("DELETE", f"/snapshots/{snap['snapshot_id']}")
    # Builds belong to Tensorlake's private builder: not served, and said so by a 404.
    assert httpx.post(f"{api.server.url}/platform/v1/sandbox-template-builds", json={},
                      headers=auth()).status_code == 404
