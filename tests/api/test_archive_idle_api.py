"""Archived sandboxes (issue 14 item 5) and the default idle-out of named sandboxes
(item 8), through the real server. ``archived-sandboxes`` was a 404 before; a named
sandbox without ``timeout_secs`` never suspended."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import pytest

from cellbox.manager import archive
from cellbox.manager.records import SandboxRecord, Status, now_ms
from cellbox.manager.store import Store

from ..keys import auth
from .conftest import Api, ServerProcess

pytestmark = pytest.mark.root


def test_terminated_sandboxes_are_archived_and_readable(api: Api):
    sid = api.create({})["sandbox_id"]
    live = api.request("GET", f"/archived-sandboxes/{sid}")
    assert live.status_code == 404  # a live sandbox is not archived
    assert api.delete(sid).status_code == 200
    r = api.request("GET", f"/archived-sandboxes/{sid}")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["id"] == sid and info["status"] == "terminated" and info["archived_at"] >= info["created_at"]
    page = api.request("GET", "/archived-sandboxes", params={"limit": 1}).json()
    assert len(page["sandboxes"]) == 1 and page["prev_cursor"] is None
    assert page["sandboxes"][0]["id"] == sid  # newest first
    if page["next_cursor"]:
        nxt = api.request("GET", "/archived-sandboxes", params={"limit": 1, "cursor": page["next_cursor"]}).json()
        assert nxt["sandboxes"][0]["id"] != sid and nxt["prev_cursor"] is not None
    # Another project cannot read it; bad cursors and directions are 400s.
    key = httpx.post(f"{api.server.url}/keys", json={"project": f"arc-{secrets.token_hex(3)}", "role": "member"},
                     headers=auth()).json()
    other = httpx.get(f"{api.server.url}/archived-sandboxes/{sid}", headers={"Authorization": f"Bearer {key['key']}"})
    assert other.status_code == 404
    for params in ({"cursor": "abc"}, {"cursor": "-3"}, {"direction": "sideways"}, {"limit": 0}):
        bad = api.request("GET", "/archived-sandboxes", params=params)
        assert bad.status_code == 400, (params, bad.text)


def test_purge_drops_only_what_is_past_retention(tmp_path: Path):
    """Against a database of its own: the shared one holds other runs' archives."""
    store = Store(tmp_path / "cellbox.db")
    old = now_ms() - 3600_000
    recs = {
        "old": SandboxRecord(id="a" * 21, namespace="p", image="i", cpus=1, memory_mb=64, disk_mb=1,
                             status=Status.TERMINATED, created_at=old, terminated_at=old),
        "new": SandboxRecord(id="b" * 21, namespace="p", image="i", cpus=1, memory_mb=64, disk_mb=1,
                             status=Status.FAILED, terminated_at=now_ms()),
        "live": SandboxRecord(id="c" * 21, namespace="p", image="i", cpus=1, memory_mb=64, disk_mb=1,
                              status=Status.RUNNING, created_at=old),
    }
    for rec in recs.values():
        store.insert(rec)
    logs = tmp_path / "logs"
    (logs / recs["old"].id).mkdir(parents=True)
    (logs / recs["old"].id / "out.log").write_text("x")
    assert archive.purge(store, 1800, [logs]) == 1
    assert store.get(recs["old"].id) is None and not (logs / recs["old"].id).exists()
    assert store.get(recs["new"].id) is not None and store.get(recs["live"].id) is not None
    store.close()


def test_named_sandbox_idles_out_by_default(tmp_path: Path):
    srv = ServerProcess(tmp_path / "server.log")
    srv.extra_env = {"CELLBOX_NAMED_IDLE_SECS": "2"}
    srv.start()
    api = Api(srv)
    try:
        name = f"idle-default-{secrets.token_hex(3)}"
        api.create({"name": name})  # no timeout_secs: the server's default applies
        never = f"idle-never-{secrets.token_hex(3)}"
        api.create({"name": never, "timeout_secs": 0})  # explicit 0: never
        api.wait_status(name, "suspended", timeout=60)
        assert api.get(never)["status"] == "running"
        ephemeral = api.create({})["sandbox_id"]  # ephemeral ones have no idle-out
        time.sleep(3)
        assert api.get(ephemeral)["status"] == "running" and api.get(never)["status"] == "running"
    finally:
        api.cleanup()
        assert srv.stop() == 0
