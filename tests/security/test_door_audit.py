"""The audit log through the real server: failed authentications and the proxy's
state-changing calls (issue 12, gap 6). Before, neither was recorded (only API
calls with a valid key were): both assertions on the new rows failed.
"""

from __future__ import annotations

import secrets

import httpx

from ..api.conftest import Api, ServerProcess, api, server  # noqa: F401
from ..keys import auth
from .test_door import Key, unique


def _audit(server: ServerProcess, limit: int = 500) -> list[dict]:
    resp = httpx.get(f"{server.url}/audit", params={"limit": limit}, headers=auth())
    assert resp.status_code == 200
    return resp.json()["entries"]  # type: ignore[no-any-return]


def test_failed_authentications_are_audited_without_secrets(server: ServerProcess):
    key_id, secret = secrets.token_hex(8), secrets.token_hex(32)
    bad = f"cbx_{key_id}_{secret}"
    assert httpx.get(f"{server.url}/sandboxes", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    proxy = f"http://127.0.0.1:{server.proxy_port}/api/v1/processes"
    assert httpx.post(proxy, headers={"Host": "nosuch.local", "Authorization": f"Bearer {bad}"}).status_code == 401
    rows = [r for r in _audit(server) if r["key_id"] == key_id]
    actions = {r["action"] for r in rows}
    assert "api GET /sandboxes" in actions and "proxy POST /api/v1/processes" in actions, rows
    assert all(r["status"] == 401 and r["project"] is None for r in rows)
    assert secret not in httpx.get(f"{server.url}/audit", params={"limit": 10_000}, headers=auth()).text


def test_proxy_calls_that_change_state_are_audited(server: ServerProcess, api: Api):
    key = Key(server, unique("aud"))
    sid = key.api(api.made).create({})["sandbox_id"]
    proxy = f"http://127.0.0.1:{server.proxy_port}"
    host = {"Host": f"{sid}.local", **key.headers}
    started = httpx.post(f"{proxy}/api/v1/processes", json={"command": "true"}, headers=host, timeout=30)
    assert started.status_code == 201, started.text
    assert httpx.get(f"{proxy}/api/v1/processes", headers=host, timeout=30).status_code == 200
    rows = [r for r in _audit(server) if r["object"] == sid]
    proxied = [r for r in rows if r["action"].startswith("proxy ")]
    assert [(r["action"], r["key_id"], r["project"], r["status"]) for r in proxied] == [
        ("proxy POST /api/v1/processes", key.id, key.project, 200)], proxied  # the GET is not recorded
    # Another project's key on the same sandbox: refused, and recorded as such.
    other = Key(server, unique("aud2"))
    resp = httpx.post(f"{proxy}/api/v1/processes", json={"command": "true"},
                      headers={"Host": f"{sid}.local", **other.headers}, timeout=30)
    assert resp.status_code == 404
    assert any(r["key_id"] == other.id and r["status"] == 404 for r in _audit(server) if r["object"] == sid)
