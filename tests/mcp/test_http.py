"""``cellbox mcp --transport http``: bearer keys, project scoping, and the memory-state tools.

The HTTP transport acts with the key of each request, never with its own: no key or a
bad one is a 401 before the MCP layer; a member key of another project sees only its
own sandboxes, and another project's sandbox is "not found" exactly as in the API.
"""

from __future__ import annotations

import httpx
from mcp import Client

from cellbox.sdk import SandboxClient

from ..keys import admin_key
from .harness import call, http_target, session
from .test_stdio import assert_clear_error

INIT = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_no_key_or_bad_key_is_401(mcp_http) -> None:
    for headers in ({}, {"Authorization": "Bearer cbx_not_a_real_key"}, {"Authorization": "Basic eDp5"},
                    {"Authorization": "Bearer  x y"}):
        r = httpx.post(mcp_http.url, json=INIT, headers={**ACCEPT, **headers}, timeout=30)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        assert r.json()["code"] == "UNAUTHENTICATED" and "Bearer" in r.headers["www-authenticate"]
    ok = httpx.post(mcp_http.url, json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {admin_key()}"}, timeout=30)
    assert ok.status_code != 401, ok.text


def test_project_scoping(live_server, mcp_http, other_project, tracker) -> None:
    async def as_other(client: Client) -> str:
        made = await call(client, "create_sandbox", memory_mb=512)
        assert made.ok, made.text
        sid = tracker.add(made.data["id"], namespace=made.data["project"])  # deleted where it really is
        assert made.data["project"] == other_project.project  # made in the key's project, not the server's
        listed = await call(client, "list_sandboxes")
        assert [s["id"] for s in listed.data["sandboxes"]] == [sid]  # only its own project's
        assert (await call(client, "write_file", sandbox_id=sid, path="/secret.txt", content="theirs")).ok
        return sid

    async def as_admin(client: Client, theirs: str) -> str:
        made = await call(client, "create_sandbox", memory_mb=512)
        mine = tracker.add(made.data["id"])
        for tool, args in (("get_sandbox", {}), ("run_command", {"command": "id"}),
                           ("read_file", {"path": "/secret.txt"}), ("terminate_sandbox", {}),
                           ("clone_sandbox", {}), ("snapshot_sandbox", {})):
            assert_clear_error(await call(client, tool, sandbox_id=theirs, **args), "not found")
        return mine

    async def other_again(client: Client, mine: str) -> None:
        assert_clear_error(await call(client, "run_command", sandbox_id=mine, command="id"), "not found")
        assert_clear_error(await call(client, "terminate_sandbox", sandbox_id=mine), "not found")

    theirs = session(http_target(mcp_http.url, other_project.key), as_other)
    mine = session(http_target(mcp_http.url, admin_key()), lambda c: as_admin(c, theirs))
    session(http_target(mcp_http.url, other_project.key), lambda c: other_again(c, mine))
    with SandboxClient(api_url=live_server.api_url) as admin:
        assert admin.get(mine).status == "running"  # the other project's attempts changed nothing


def test_revoked_key_fails_its_next_call(live_server, mcp_http) -> None:
    with SandboxClient(api_url=live_server.api_url) as admin:
        made = admin.create_key(project="mcp-revoke", role="member", expires="1h")

        async def flow(client: Client) -> None:
            assert (await call(client, "list_sandboxes")).ok
            admin.revoke_key(made["id"])
            assert_clear_error(await call(client, "list_sandboxes"), "permission")

        session(http_target(mcp_http.url, made["key"]), flow)


def test_memory_state_tools(live_server, mcp_http, tracker) -> None:
    snapshots: list[str] = []

    async def flow(client: Client) -> None:
        made = await call(client, "create_sandbox", memory_mb=512, name=f"mcp-mem-{id(snapshots) % 10 ** 6}",
                          allow_internet_access=False)
        sid = tracker.add(made.data["id"])
        counter = "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.2; done"
        pid = (await call(client, "start_process", sandbox_id=sid, command=counter)).data["pid"]
        snap = await call(client, "snapshot_sandbox", sandbox_id=sid, snapshot_type="memory")
        assert snap.ok and snap.data["status"] == "completed", snap.text
        snapshots.append(snap.data["id"])
        restored = await call(client, "create_sandbox", snapshot_id=snap.data["id"])
        twin = tracker.add(restored.data["id"])
        clones = await call(client, "clone_sandbox", sandbox_id=sid, times=2)
        assert clones.ok and len(clones.data["ids"]) == 2, clones.text
        for cid in clones.data["ids"]:
            tracker.add(cid)
        for box in (twin, *clones.data["ids"]):  # the counter runs on in each copy
            info = await call(client, "read_process_output", sandbox_id=box, pid=pid)
            assert info.data["status"] == "running", (box, info.text)
        assert (await call(client, "suspend_sandbox", sandbox_id=sid)).data["status"] == "suspended"
        assert (await call(client, "resume_sandbox", sandbox_id=sid)).data["status"] == "running"
        after = await call(client, "read_process_output", sandbox_id=sid, pid=pid)
        assert after.data["status"] == "running", after.text
        assert (await call(client, "delete_snapshot", snapshot_id=snapshots.pop())).ok
        assert_clear_error(await call(client, "delete_snapshot", snapshot_id="nosuchsnapshot"), "not found")

    try:
        session(http_target(mcp_http.url, admin_key()), flow)
    finally:
        with SandboxClient(api_url=live_server.api_url) as admin:
            for sid in snapshots:
                admin.delete_snapshot(sid)


def test_oversize_bodies(mcp_http, tracker) -> None:
    """A body past the transport's bound is a 413, not a 500 or a hang; a payload under
    it but past the per-write bound is a tool error naming the limit."""
    from cellbox.mcp import limits

    huge = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "write_file", "arguments": {"sandbox_id": "x", "path": "/x",
                                                          "content": "y" * (limits.WRITE_MAX * 2 + 1)}}}
    r = httpx.post(mcp_http.url, json=huge, headers={**ACCEPT, "Authorization": f"Bearer {admin_key()}"}, timeout=60)
    assert r.status_code == 413, (r.status_code, r.text[:300])

    async def flow(client: Client) -> None:
        made = await call(client, "create_sandbox", memory_mb=512)
        sid = tracker.add(made.data["id"])
        too_big = "é" * (limits.WRITE_MAX // 2 + 1)  # under the character bound, over the byte bound
        assert_clear_error(await call(client, "write_file", sandbox_id=sid, path="/big", content=too_big), "at most")
        assert_clear_error(await call(client, "read_file", sandbox_id=sid, path="/big"), "not")

    session(http_target(mcp_http.url, admin_key()), flow)
