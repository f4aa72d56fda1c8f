"""The front door through the real server: keys, projects, quotas, secrets (issue 12).

Each test that attacks (no key, a revoked or expired key, another project's objects,
more creates than the quota) failed on the code before the door: every request was
accepted and every namespace open to every caller.
"""

from __future__ import annotations

import concurrent.futures
import re
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from cellbox.api import create_app
from cellbox.auth import keys as keymod
from cellbox.auth.store import AuthStore
from cellbox.config import Settings

from ..keys import auth
# The real server of tests/api, shared per session (imported fixtures are pytest fixtures here too).
from ..api.conftest import SDK_CREATE_HEADERS, Api, ServerProcess, api, server  # noqa: F401

pytestmark = pytest.mark.root

PUBLIC_PATHS = {"/health"}
# Capability URLs: no key, the URL's token is the credential; a made-up one is a 404
# (the tensorlake SDK's context upload, api/image_service.py).
CAPABILITY_PATHS = {("PUT", "/images/v4/uploads/x/x")}


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


class Key:
    """A member (or admin) key of one project, made through the API, with a client."""

    def __init__(self, server: ServerProcess, project: str, role: str = "member", **extra: Any) -> None:
        resp = httpx.post(f"{server.url}/keys", json={"project": project, "role": role, **extra}, headers=auth())
        assert resp.status_code == 201, resp.text
        self.info = resp.json()
        self.value: str = self.info["key"]
        self.id: str = self.info["id"]
        self.project = project
        self.server = server
        self.headers = {"Authorization": f"Bearer {self.value}"}

    def api(self, made: list[str]) -> Api:
        """An ``Api`` client for this key's project (namespaced paths), cleaned up by the admin."""
        client = Api(self.server, self.project, made)
        client.http.headers.update(self.headers)
        return client

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.server.url + path, headers={**self.headers, **kw.pop("headers", {})}, timeout=60, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.server.url + path, headers={**self.headers, **kw.pop("headers", {})}, timeout=120, **kw)


def _routes() -> list[tuple[str, str]]:
    """Every (method, path) the app serves, with placeholders filled in: read from the
    app's own route table, so a route added later is covered without editing this test."""
    app = create_app(None, door=None)  # type: ignore[arg-type]
    out = []
    for template, methods in _walk(app.routes, ""):
        path = re.sub(r"\{namespace\}", "default", template)
        path = re.sub(r"\{key_id\}", "0" * 16, path)
        path = re.sub(r"\{[^}:]+(:path)?\}", "x", path)
        out += [(method, path) for method in methods if method != "HEAD"]
    return out


def _walk(routes: list[Any], prefix: str) -> list[tuple[str, set[str]]]:
    """(path template, methods) of every route, included routers too (FastAPI keeps an
    included router as one entry holding the original router and its prefix)."""
    found = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found += _walk(inner.routes, prefix + route.include_context.prefix)
        elif isinstance(route, (APIRoute, Route)):
            found.append((prefix + route.path, set(route.methods or ())))
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}: teach this test to walk it")
    return found


def test_every_route_but_health_needs_a_key(server: ServerProcess):
    routes = _routes()
    assert len(routes) > 60
    bad_keys = [None, "Bearer", "Basic abc", "Bearer nonsense", f"Bearer cbx_{'0' * 16}_{'0' * 64}"]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path in routes:
            for bad in bad_keys:
                headers = {} if bad is None else {"Authorization": bad}
                resp = http.request(method, path, headers=headers, json={})
                if path in PUBLIC_PATHS:
                    assert resp.status_code == 200, (method, path)
                    continue
                if (method, path) in CAPABILITY_PATHS:
                    assert resp.status_code == 404, (method, path, resp.text)
                    continue
                assert resp.status_code == 401, (method, path, bad, resp.status_code, resp.text)
                assert resp.json()["code"] == "UNAUTHORIZED" and resp.json()["error"]
                assert resp.headers["www-authenticate"] == "Bearer"
    # The proxy too: the agent port without a key is a 401 whatever the sandbox.
    resp = httpx.get(f"http://127.0.0.1:{server.proxy_port}/api/v1/health", headers={"Host": "whatever.local"})
    assert resp.status_code == 401 and resp.json()["code"] == "UNAUTHORIZED"


def test_revoke_takes_effect_at_once_in_another_process(server: ServerProcess, settings: Settings):
    key = Key(server, unique("rev"))
    assert key.get("/sandboxes").status_code == 200
    # Revoked by another process writing the shared database (as a second server would).
    db = sqlite3.connect(str(settings.db_path), isolation_level=None)
    try:
        assert AuthStore(db).revoke_key(key.id)
    finally:
        db.close()
    # The server may reuse the key's row for ROW_TTL (0.5 s): refused within 1 s of the revoke.
    revoked_at = time.monotonic()
    while (resp := key.get("/sandboxes")).status_code == 200:
        assert time.monotonic() - revoked_at < 1.0, "a revoked key was accepted more than 1 s after the revoke"
        time.sleep(0.05)
    assert resp.status_code == 401 and "revoked" in resp.json()["error"]
    # Through the API as well, for a second key: the revoking process forgets it at once.
    other = Key(server, key.project)
    assert other.get("/sandboxes").status_code == 200
    assert httpx.delete(f"{server.url}/keys/{other.id}", headers=auth()).status_code == 200
    assert other.get("/sandboxes").status_code == 401
    assert httpx.get(f"http://127.0.0.1:{server.proxy_port}/api/v1/health",
                     headers={"Host": "x.local", **other.headers}).status_code == 401


def test_expired_key_is_refused(server: ServerProcess):
    key = Key(server, unique("exp"), expires="1s")
    assert key.info["expires_at"] is not None
    deadline = time.monotonic() + 10
    while key.get("/sandboxes").status_code == 200:
        assert time.monotonic() < deadline, "key still accepted 10 s after it expired"
        time.sleep(0.2)
    resp = key.get("/sandboxes")
    assert resp.status_code == 401 and "expired" in resp.json()["error"]


def test_keys_are_stored_as_hashes_and_shown_once(server: ServerProcess, settings: Settings):
    key = Key(server, unique("hash"))
    raw = Path(settings.db_path).read_bytes() + Path(str(settings.db_path) + "-wal").read_bytes()
    assert key.value.encode() not in raw and key.value.split("_")[2].encode() not in raw
    listed = httpx.get(f"{server.url}/keys", headers=auth()).json()["keys"]
    mine = [k for k in listed if k["id"] == key.id]
    assert mine and "key" not in mine[0] and "hash" not in mine[0]
    assert keymod.parse(key.value) is not None and key.value.startswith("cbx_")


def test_member_keys_cannot_do_admin_things(server: ServerProcess):
    member = Key(server, unique("mem"))
    for method, path, body in [("POST", "/keys", {"project": member.project, "role": "admin"}),
                               ("GET", "/keys", None), ("DELETE", f"/keys/{member.id}", None),
                               ("PUT", f"/quotas/{member.project}", {"running_sandboxes": 100}),
                               ("GET", "/audit", None)]:
        resp = httpx.request(method, server.url + path, json=body, headers=member.headers)
        assert resp.status_code == 403, (method, path, resp.text)
    # Other projects do not exist for it: 404, never 403.
    resp = member.get("/v1/namespaces/default/sandboxes")
    assert resp.status_code == 404
    assert member.get("/quotas/default").status_code == 404
    who = member.post("/platform/v1/keys/introspect").json()
    assert who["projectId"] == member.project and who["id"] == member.id and who["organizationId"]
    projects = member.get(f"/platform/v1/organizations/{who['organizationId']}/projects").json()["items"]
    assert [p["id"] for p in projects] == [member.project]


def test_another_projects_objects_are_404_everywhere(server: ServerProcess, api: Api):
    a, b = Key(server, unique("pa")), Key(server, unique("pb"))
    api_a = a.api(api.made)
    name = unique("mine")
    sid = api_a.create({"name": name})["sandbox_id"]
    snap = api_a.request("POST", f"/sandboxes/{sid}/snapshot", json={}).json()["snapshot_id"]
    deadline = time.monotonic() + 120
    while api_a.request("GET", f"/snapshots/{snap}").json()["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    # B, through flat paths, its own namespace, A's namespace; by ID and by name.
    for prefix in ("", f"/v1/namespaces/{b.project}", f"/v1/namespaces/{a.project}"):
        for ref in (sid, name):
            assert b.get(f"{prefix}/sandboxes/{ref}").status_code == 404, (prefix, ref)
            assert b.post(f"{prefix}/sandboxes/{ref}/copy").status_code == 404
            assert b.post(f"{prefix}/sandboxes/{ref}/snapshot", json={}).status_code == 404
            resp = httpx.delete(f"{server.url}{prefix}/sandboxes/{ref}", headers=b.headers)
            assert resp.status_code == 404
        assert b.get(f"{prefix}/snapshots/{snap}").status_code == 404
        assert snap not in b.get(f"{prefix}/snapshots").text
    # Restoring or registering A's snapshot from B.
    resp = b.api(api.made).request("POST", "/sandboxes", json={"snapshot_id": snap}, headers=SDK_CREATE_HEADERS)
    assert resp.status_code == 404 and resp.json()["code"] == "SNAPSHOT_NOT_FOUND", resp.text
    assert b.post("/images/register", json={"name": unique("stolen"), "snapshot_id": snap}).status_code in (403, 404)
    # The proxy: by ID and by name, on the agent port.
    for ref in (sid, name):
        resp = httpx.get(f"http://127.0.0.1:{server.proxy_port}/api/v1/health", headers={"Host": f"{ref}.local", **b.headers})
        assert resp.status_code == 404, resp.text
        resp = httpx.get(f"http://127.0.0.1:{server.proxy_port}/api/v1/health",
                         headers={"X-Tensorlake-Sandbox-Id": ref, **b.headers})
        assert resp.status_code == 404
    # A itself still reaches everything, through the proxy by name too.
    resp = httpx.get(f"http://127.0.0.1:{server.proxy_port}/api/v1/health", headers={"Host": f"{name}.local", **a.headers})
    assert resp.json() == {"healthy": True}
    assert api_a.get(sid)["status"] == "running"
    httpx.delete(f"{server.url}/v1/namespaces/{a.project}/snapshots/{snap}", headers=auth(), timeout=60)


def test_unauthenticated_access_opens_exposed_ports_only(server: ServerProcess, api: Api):
    key = Key(server, unique("pub"))
    own = key.api(api.made)
    public = own.create({"exposed_ports": [8080], "allow_unauthenticated_access": True})["sandbox_id"]
    private = own.create({"exposed_ports": [8080]})["sandbox_id"]
    proxy = f"http://127.0.0.1:{server.proxy_port}/"
    # Nothing listens on 8080: getting past the door means a 502 from the proxy, not a 401.
    assert httpx.get(proxy, headers={"Host": f"8080-{public}.local"}, timeout=30).status_code == 502
    assert httpx.get(proxy, headers={"Host": f"8080-{private}.local"}).status_code == 401
    assert httpx.get(proxy + "api/v1/health", headers={"Host": f"{public}.local"}).status_code == 401
    assert httpx.get(proxy, headers={"Host": f"8080-{private}.local", **key.headers}, timeout=30).status_code == 502
    # The caller's key never reaches code in the sandbox: a server on the exposed port
    # echoes the headers it got.
    echo = ("import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n def do_GET(self):\n"
            "  b=str(self.headers).encode(); self.send_response(200); self.send_header('Content-Length', str(len(b)));"
            " self.end_headers(); self.wfile.write(b)\nhttp.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()")
    started = httpx.post(proxy + "api/v1/processes", json={"command": "python3", "args": ["-c", echo]},
                         headers={"Host": f"{private}.local", **key.headers}, timeout=30)
    assert started.status_code == 201, started.text
    deadline = time.monotonic() + 30
    while (got := httpx.get(proxy, headers={"Host": f"8080-{private}.local", **key.headers}, timeout=30)).status_code != 200:
        assert time.monotonic() < deadline, got.text
        time.sleep(0.2)
    assert "x-forwarded-for" in got.text.lower() and "cbx_" not in got.text and key.value not in got.text


def test_quota_holds_under_50_concurrent_creates(server: ServerProcess, api: Api):
    key = Key(server, unique("quota"))
    resp = httpx.put(f"{server.url}/quotas/{key.project}", json={"running_sandboxes": 3}, headers=auth())
    assert resp.status_code == 200 and resp.json()["limits"] == {"running_sandboxes": 3}
    own = key.api(api.made)

    def one(_: int) -> httpx.Response:
        return own.request("POST", "/sandboxes", json={"wait": False, "resources": {"memory_mb": 256}})

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    ok = [r for r in results if r.status_code in (200, 202)]
    refused = [r for r in results if r.status_code == 403]
    assert 1 <= len(ok) <= 3, [r.status_code for r in results]
    assert len(ok) + len(refused) == 50, {r.status_code for r in results}
    body = refused[0].json()
    assert body["code"] == "QUOTA_EXCEEDED" and "running_sandboxes" in body["error"] and "3" in body["error"]
    usage = httpx.get(f"{server.url}/quotas/{key.project}", headers=key.headers).json()["usage"]
    assert usage["running_sandboxes"] <= 3


def test_create_rate_is_429_with_retry_after(server: ServerProcess, api: Api):
    key = Key(server, unique("rate"))
    httpx.put(f"{server.url}/quotas/{key.project}", json={"creates_per_minute": 1}, headers=auth())
    own = key.api(api.made)
    own.create({"wait": False, "resources": {"memory_mb": 256}}, expect=202)
    resp = own.request("POST", "/sandboxes", json={"wait": False})
    assert resp.status_code == 429 and resp.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(resp.headers["retry-after"]) <= 61


def test_secrets_reach_processes_and_nowhere_else(server: ServerProcess, api: Api, settings: Settings):
    key = Key(server, unique("sec"))
    value = f"s3cr3t-{secrets.token_hex(8)}"
    resp = httpx.put(f"{server.url}/secrets/DB_PASSWORD", json={"value": value}, headers=key.headers)
    assert resp.status_code == 200 and value not in resp.text
    listed = key.get("/secrets").json()["secrets"]
    assert [s["name"] for s in listed] == ["DB_PASSWORD"] and value not in key.get("/secrets").text
    own = key.api(api.made)
    before = len(own.request("GET", "/sandboxes").json()["sandboxes"])
    resp = own.request("POST", "/sandboxes", json={"secret_names": ["DB_PASSWORD", "NOPE"]})
    assert resp.status_code == 400 and "NOPE" in resp.json()["error"]
    assert len(own.request("GET", "/sandboxes").json()["sandboxes"]) == before  # nothing was made
    sid = own.create({"secret_names": ["DB_PASSWORD"]})["sandbox_id"]
    run = httpx.post(f"http://127.0.0.1:{server.proxy_port}/api/v1/processes/run",
                     json={"command": "sh", "args": ["-c", "echo $DB_PASSWORD"]},
                     headers={"Host": f"{sid}.local", **key.headers}, timeout=60)
    assert value in run.text, run.text
    # Another project cannot name it, and it is nowhere in clear on the host.
    other = Key(server, unique("sec2"))
    resp = other.api(api.made).request("POST", "/sandboxes", json={"secret_names": ["DB_PASSWORD"]})
    assert resp.status_code == 400
    for path in (settings.db_path, Path(str(settings.db_path) + "-wal"), Path(server.log_path),
                 settings.sandboxes_dir / sid / "config.json"):
        if path.exists():
            assert value.encode() not in path.read_bytes(), path
    assert value not in own.request("GET", f"/sandboxes/{sid}").text


def test_health_and_audit(server: ServerProcess, api: Api):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    key = Key(server, unique("aud"))
    key.post("/sandboxes", json={"image": "Bad Image!"})
    entries = httpx.get(f"{server.url}/audit", params={"project": key.project}, headers=auth()).json()["entries"]
    assert entries and entries[0]["key_id"] == key.id and entries[0]["action"] == "POST /sandboxes"
    assert entries[0]["status"] == 400 and entries[0]["client"] == "127.0.0.1"
