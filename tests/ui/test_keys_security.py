"""Keys made on the keys page work with the SDK and their revoke ends their console
sessions; and what a hostile page or tenant tries: another project's sandbox, a POST
without the CSRF token, a cross-site Origin, a WebSocket from another origin."""

from __future__ import annotations

import base64
import os
import re
import socket
from typing import Any

import httpx
import pytest

from cellbox.sdk import SandboxClient

from ..api.conftest import ServerProcess
from .conftest import Project, login, new_page, shot


def _session(page: Any) -> tuple[dict[str, str], str]:
    """The page's session cookie and CSRF token, for requests made outside the browser."""
    cookie = next(c for c in page.context.cookies() if c["name"] == "cellbox_session")
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    return {"cellbox_session": cookie["value"]}, token


def test_key_from_keys_page_works_and_revoke_ends_its_session(admin_page: Any, browser: Any, server: ServerProcess):
    page = admin_page
    page.goto("/ui/keys")
    project = f"ui-k{os.getpid()}"
    page.fill("#key-form input[name=project]", project)
    page.fill("#key-form input[name=name]", "from the keys page")
    page.click("#key-form button")
    key = page.locator("#new-key").inner_text().strip()
    key_id = key.split("_")[1]
    with SandboxClient(api_url=server.url, api_key=key) as sdk:
        assert sdk.whoami()["project_id"] == project
        assert sdk.list() == []  # the key works, and sees its own (empty) project
    member = new_page(browser, server)
    try:
        login(member, key)
        assert member.locator("#project").inner_text() == project
        page.on("dialog", lambda d: d.accept())
        page.click(f"#key-{key_id} button")
        page.locator("#keys-page .ok", has_text="revoked").wait_for()
        shot(page, "keys")
        member.wait_for_url("**/ui/login", timeout=45_000)  # the open page's live feed logged it out
        member.goto("/ui/sandboxes")
        assert member.url.endswith("/ui/login")
    finally:
        member.context.close()
    resp = httpx.get(f"{server.url}/sandboxes", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 401
    for name in ("images", "usage", "audit"):
        page.goto(f"/ui/{name}")
        shot(page, name)


def test_another_projects_sandbox_is_404(member_page: Any, other_project: Project, server: ServerProcess):
    theirs = other_project.create()
    page = member_page
    resp = page.goto(f"/ui/sandboxes/{theirs}")
    assert resp.status == 404 and "not found" in page.content()
    cookies, token = _session(page)
    with httpx.Client(base_url=server.url, cookies=cookies, headers={"X-CSRF-Token": token}) as http:
        for method, path in [("GET", f"/ui/sandboxes/{theirs}/files?path=/"),
                             ("GET", f"/ui/sandboxes/{theirs}/files/download?path=/etc/hostname"),
                             ("GET", f"/ui/sandboxes/{theirs}/stats"),
                             ("POST", f"/ui/sandboxes/{theirs}/pty"),
                             ("POST", f"/ui/sandboxes/{theirs}/terminate"),
                             ("POST", f"/ui/sandboxes/{theirs}/snapshot")]:
            assert http.request(method, path).status_code == 404, (method, path)
    assert other_project.sdk.get(theirs).status == "running"  # untouched
    # Admin pages are not for member keys.
    assert page.goto("/ui/keys").status == 403
    assert page.goto("/ui/audit").status == 403


def test_post_without_csrf_token_is_403(member_page: Any, server: ServerProcess, project: Project):
    page = member_page
    cookies, token = _session(page)
    form = {"action": "nonsense", "ids": "x"}
    with httpx.Client(base_url=server.url, cookies=cookies) as http:
        assert http.post("/ui/sandboxes", data={"name": "csrf"}).status_code == 403
        assert http.post("/ui/sandboxes/bulk", data=form, headers={"X-CSRF-Token": "wrong"}).status_code == 403
        # The right token passes the gate (then the bad action is the handler's 400).
        ok = http.post("/ui/sandboxes/bulk", data=form, headers={"X-CSRF-Token": token})
        assert ok.status_code == 400 and "action" in ok.text
        # A cross-site Origin is refused even with the token; and for login too.
        evil = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
        assert http.post("/ui/sandboxes/bulk", data=form, headers=evil).status_code == 403
    assert httpx.post(f"{server.url}/ui/login", data={"api_key": project.key},
                      headers={"Origin": "http://evil.example"}).status_code == 403
    assert project.sdk.list() == []  # nothing was made
    resp = page.request.get("/ui/sandboxes")
    csp = resp.headers["content-security-policy"]
    script_src = next(d.strip() for d in csp.split(";") if d.strip().startswith("script-src"))
    assert script_src == "script-src 'self'" and "frame-ancestors 'none'" in csp
    assert not re.search(r"<script(?![^>]*\bsrc=)", resp.text())  # no inline script in the page


def _handshake(server: ServerProcess, path: str, cookies: dict[str, str], origin: str | None) -> int:
    """Status of a raw WebSocket handshake (101 = accepted)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{server.api_port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
             "Sec-WebSocket-Version: 13", "Cookie: " + "; ".join(f"{k}={v}" for k, v in cookies.items())]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", server.api_port), timeout=20) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = s.recv(4096).decode("latin-1")
    return int(head.split()[1])


@pytest.mark.parametrize("origin, expect", [("http://evil.example", 403), (None, 403), ("same", 101)])
def test_websocket_from_another_origin_is_refused(member_page: Any, server: ServerProcess, project: Project,
                                                  origin: str | None, expect: int):
    sid = project.create()
    cookies, token = _session(member_page)
    resp = httpx.post(f"{server.url}/ui/sandboxes/{sid}/pty", cookies=cookies, headers={"X-CSRF-Token": token},
                      json={"rows": 24, "cols": 80})
    assert resp.status_code == 201, resp.text
    path = f"/ui/sandboxes/{sid}/pty/{resp.json()['session_id']}/ws"
    if origin == "same":
        origin = f"http://127.0.0.1:{server.api_port}"
    assert _handshake(server, path, cookies, origin) == expect
    assert _handshake(server, path, {}, f"http://127.0.0.1:{server.api_port}") == 403  # no session: refused
