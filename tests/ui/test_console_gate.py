"""Every console route but the login page and static files needs a session; bad
input is a clear 4xx. Walks the console's own route table (like tests/security/
test_door.py for the API), so a route added later is covered without editing this."""

from __future__ import annotations

import re
from typing import Any

import httpx
from starlette.routing import Route, WebSocketRoute

from cellbox.ui.app import routes

from ..api.conftest import ServerProcess
from .conftest import Project
from .test_keys_security import _handshake, _session

OPEN = {"/ui/login"}


def _paths() -> list[tuple[str, str]]:
    out = []
    for route in routes():
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        if isinstance(route, WebSocketRoute):
            out.append(("WS", path))
        elif isinstance(route, Route):
            out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return out


def test_every_console_route_needs_a_session(server: ServerProcess):
    paths = _paths()
    assert len(paths) > 30
    clients = [httpx.Client(base_url=server.url, timeout=30, cookies=c) for c in ({}, {"cellbox_session": "forged"})]
    for method, path in paths:
        if path in OPEN:
            continue
        if method == "WS":
            assert _handshake(server, path, {}, server.url) == 403, path
            continue
        for http in clients:
            resp = http.request(method, path, headers={"Accept": "text/html"})
            if path.startswith("/ui/static/"):
                assert resp.status_code in (200, 404), (method, path)
                continue
            if method == "GET":
                assert resp.status_code in (303, 401), (method, path, resp.status_code)
            else:
                assert resp.status_code in (401, 403), (method, path, resp.status_code)
            assert "csrf-token" not in resp.text  # no page content leaked
    for http in clients:
        http.close()


def test_static_files_are_a_fixed_table(server: ServerProcess):
    ok = httpx.get(f"{server.url}/ui/static/vendor/xterm.js")
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/javascript")
    for trick in ("../app.py", "..%2F..%2Fpyproject.toml", "vendor/../../sessions.py", "npm/package.json"):
        resp = httpx.get(f"{server.url}/ui/static/{trick}")
        assert resp.status_code in (401, 404) and "import" not in resp.text, trick  # never a file of ours


def test_bad_input_is_a_clear_4xx(member_page: Any, server: ServerProcess, project: Project):
    cookies, token = _session(member_page)
    with httpx.Client(base_url=server.url, cookies=cookies, headers={"X-CSRF-Token": token}) as http:
        big = http.post("/ui/sandboxes", content=b"name=" + b"x" * (70 << 10),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert big.status_code == 400 and "form" in big.text
        bad = http.post("/ui/sandboxes", data={"cpus": "many"})
        assert bad.status_code == 400 and "cpus" in bad.text
        assert http.post("/ui/sandboxes", data={"memory_mb": "-5"}).status_code == 400
        assert http.post("/ui/sandboxes", data={"allow_out": "not an address!"}).status_code == 400
        assert http.post("/ui/sandboxes/nosuchbox/terminate").status_code == 404
        assert http.get("/ui/sandboxes/nosuchbox/files?path=relative").status_code in (400, 404)
        assert http.post("/ui/keys/zzz/revoke").status_code == 403  # a member key: not an admin
    assert project.sdk.list() == []  # none of that made anything


def test_admin_sets_a_quota_on_the_usage_page(admin_page: Any, member_page: Any, server: ServerProcess,
                                               project: Project):
    page = admin_page
    page.goto(f"/ui/usage?project={project.name}")
    page.fill("#quota-form input[name=running_sandboxes]", "0")
    page.click("#quota-form button")
    page.locator("#flash", has_text="running_sandboxes=0").wait_for()
    try:
        resp = httpx.post(f"{server.url}/sandboxes", json={}, headers=project.headers(), timeout=60)
        assert resp.status_code == 403 and resp.json()["code"] == "QUOTA_EXCEEDED"
        page.fill("#quota-form input[name=running_sandboxes]", "lots")
        page.click("#quota-form button")
        assert "running_sandboxes" in page.locator("#flash .error").inner_text()
    finally:
        page.fill("#quota-form input[name=running_sandboxes]", "")
        page.click("#quota-form button")
        page.locator("#flash", has_text="none").wait_for()
    # A member sees its own project's use, and no other project's.
    assert member_page.goto("/ui/usage").status == 200
    assert member_page.goto("/ui/usage?project=default").status == 403
