"""Suspend/resume, snapshots, restore and copies through the SDK (spec §2.5-§2.7).

The first tests drive the SDK's waiting logic against a scripted transport (no
server); the rest run against the live server, and delete every sandbox and snapshot
they make.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cellbox.errors import InvalidRequest, NotFound
from cellbox.sdk import (
    AsyncSandboxClient,
    CopyError,
    Sandbox,
    SandboxClient,
    SandboxInfo,
    SnapshotError,
    SnapshotInfo,
    SnapshotNotFoundError,
)
from cellbox.sdk import _shared
from cellbox.sdk._async import client as async_client_module
from cellbox.sdk._sync import client as sync_client_module

from .live_server import LiveServer
from ..keys import auth

LOOP = "while :; do date +%s%N >> /tmp/t; sleep 0.2; done"


# -- no server: the SDK's side of the contract ------------------------------------------------


def _info(sid: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "namespace": "default",
        "status": status,
        "resources": {"cpus": 1.0, "memory_mb": 512, "disk_mb": 10240},
        "sandbox_url": "http://127.0.0.1:9443",
        **extra,
    }


class Script:
    """A fake lifecycle API: ``handler(request) -> (status, json)``; records the requests."""

    def __init__(self, handler: Callable[[httpx.Request], tuple[int, Any]]) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.handler(request)
        return httpx.Response(status, json=body)

    def client(self) -> SandboxClient:
        c = SandboxClient("http://api.test")
        c._http.close()
        c._http = httpx.Client(transport=httpx.MockTransport(self), headers=c.config.headers())
        return c

    def calls(self) -> list[str]:
        return [f"{r.method} {r.url.path}" + (f"?{r.url.query.decode()}" if r.url.query else "") for r in self.requests]


@pytest.fixture
def fast_polls(monkeypatch):
    for mod in (sync_client_module, async_client_module):
        monkeypatch.setattr(mod, "POLL_INTERVAL", 0.01)


def test_suspend_202_polls_until_suspended(fast_polls):
    states = iter(["running", "suspending", "suspended"])

    def handler(req: httpx.Request) -> tuple[int, Any]:
        if req.method == "POST":
            return 202, _info("s1", "suspending")
        return 200, _info("s1", next(states))

    script = Script(handler)
    with script.client() as c:
        info = c.suspend("s1", timeout=100)
    assert info.status == "suspended"
    calls = script.calls()
    assert calls[0] == "POST /sandboxes/s1/suspend?wait_ms=30000"
    assert calls[1:] == ["GET /sandboxes/s1"] * 3


def test_suspend_200_is_settled_and_no_wait_sends_no_query():
    script = Script(lambda req: (200, _info("s1", "suspended")))
    with script.client() as c:
        assert c.suspend("s1", timeout=100).status == "suspended"
        assert c.suspend("s1", wait=False).status == "suspended"
    assert script.calls() == ["POST /sandboxes/s1/suspend?wait_ms=30000", "POST /sandboxes/s1/suspend"]


def test_resume_409_when_already_running_is_success_and_else_the_error(fast_polls):
    status = {"now": "running"}

    def handler(req: httpx.Request) -> tuple[int, Any]:
        if req.method == "POST":
            return 409, {"error": "not suspended", "code": "INVALID_STATE"}
        return 200, _info("s1", status["now"])

    script = Script(handler)
    with script.client() as c:
        assert c.resume("s1").status == "running"
        status["now"] = "terminated"
        with pytest.raises(Exception) as err:
            c.resume("s1")
    assert getattr(err.value, "code", None) == "INVALID_STATE"


def test_suspend_that_falls_back_to_running_is_reported(fast_polls):
    states = iter(["suspending", "running"])

    def handler(req: httpx.Request) -> tuple[int, Any]:
        if req.method == "POST":
            return 202, _info("s1", "suspending")
        return 200, _info("s1", next(states))

    with Script(handler).client() as c, pytest.raises(Exception, match="did not complete"):
        c.suspend("s1")


def test_suspend_ephemeral_maps_to_invalid_request():
    script = Script(lambda req: (400, {"error": "only named sandboxes", "code": "SANDBOX_NOT_NAMED"}))
    with script.client() as c, pytest.raises(InvalidRequest) as err:
        c.suspend("s1")
    assert err.value.code == "SANDBOX_NOT_NAMED"


def test_snapshot_waits_for_completion_and_reports_failure():
    polls = iter(["in_progress", "in_progress", "completed"])

    def handler(req: httpx.Request) -> tuple[int, Any]:
        if req.method == "POST":
            assert json.loads(req.content) == {"snapshot_type": "memory"}
            return 200, {"snapshot_id": "snap1", "status": "in_progress"}
        return 200, {"id": "snap1", "namespace": "default", "sandbox_id": "s1", "status": next(polls),
                     "snapshot_type": "memory", "size_bytes": 42}

    with Script(handler).client() as c:
        info = c.snapshot("s1", "memory")
    assert (info.id, info.status, info.snapshot_type, info.size_bytes, info.completed) == (
        "snap1", "completed", "memory", 42, True)

    def failing(req: httpx.Request) -> tuple[int, Any]:
        if req.method == "POST":
            return 200, {"snapshot_id": "snap2", "status": "in_progress"}
        return 200, {"id": "snap2", "namespace": "default", "sandbox_id": "s1", "status": "failed", "error": "boom"}

    with Script(failing).client() as c, pytest.raises(SnapshotError, match="boom") as err:
        c.snapshot("s1")
    assert err.value.snapshot_id == "snap2"
    with SandboxClient("http://api.test") as c, pytest.raises(InvalidRequest):
        c.snapshot("s1", "disk")


def test_snapshot_routes_and_not_found():
    def handler(req: httpx.Request) -> tuple[int, Any]:
        if req.url.path == "/snapshots/nope":
            return 404, {"error": "snapshot 'nope' not found", "code": "SNAPSHOT_NOT_FOUND"}
        if req.url.path == "/snapshots/plain404":
            return 404, {"error": "not found"}
        if req.method == "DELETE":
            return 404, {"error": "gone", "code": "SNAPSHOT_NOT_FOUND"}
        return 200, {"snapshots": [{"id": "a", "namespace": "default", "sandbox_id": "s1", "status": "completed"}]}

    script = Script(handler)
    with script.client() as c:
        with pytest.raises(SnapshotNotFoundError):
            c.get_snapshot("nope")
        with pytest.raises(SnapshotNotFoundError):
            c.get_snapshot("plain404")
        assert [s.id for s in c.list_snapshots()] == ["a"]
        assert [s.id for s in c.list_snapshots("s1")] == ["a"]
        c.delete_snapshot("already-gone")  # idempotent
    assert script.calls()[2:] == ["GET /snapshots", "GET /sandboxes/s1/snapshots", "DELETE /snapshots/already-gone"]


def test_copy_partial_failure_attaches_the_started_copies():
    def handler(req: httpx.Request) -> tuple[int, Any]:
        if req.method == "POST":
            assert req.url.params["times"] == "2"
            body = {"source_sandbox_id": "s1", "sandboxes": [
                {"sandbox_id": "c1", "status": "running", "sandbox_url": "http://127.0.0.1:9443"},
                {"sandbox_id": "", "status": "failed", "error_details": {"message": "out of addresses"}},
            ]}
            return 422, body
        return 200, _info(req.url.path.rsplit("/", 1)[1], "running")

    with Script(handler).client() as c, pytest.raises(CopyError, match="out of addresses") as err:
        c.copy("s1", 2)
    assert [i.id for i in err.value.sandboxes] == ["c1"] and len(err.value.failures) == 1
    assert isinstance(err.value.sandboxes[0], SandboxInfo)


def test_restore_body_leaves_resources_to_the_snapshot():
    kw = dict(image=None, disk_mb=None, timeout_secs=None, name=None, entrypoint=None, exposed_ports=None,
              allow_unauthenticated_access=None, allow_internet_access=True, allow_out=None, deny_out=None, wait=True)
    assert _shared.create_body(cpus=None, memory_mb=None, snapshot_id="snap", **kw) == {"snapshot_id": "snap"}
    assert _shared.create_body(cpus=None, memory_mb=None, snapshot_id=None, **kw) == {
        "resources": {"cpus": 1.0, "memory_mb": 1024}}
    assert _shared.create_body(cpus=2, memory_mb=None, snapshot_id="snap", **kw)["resources"] == {"cpus": 2.0}
    assert SnapshotInfo.from_json({"snapshot_id": "x", "status": "local_ready"}).completed


# -- against the live server ---------------------------------------------------------------


@pytest.fixture
def snapshot_ids(live_server: LiveServer) -> Iterator[list[str]]:
    """Snapshot IDs a test made; all deleted at teardown."""
    ids: list[str] = []
    try:
        yield ids
    finally:
        errors = []
        for sid in ids:
            r = httpx.delete(f"{live_server.api_url}/snapshots/{sid}", timeout=60, headers=auth())
            if r.status_code >= 400 and r.status_code != 404:
                errors.append(f"{sid}: {r.status_code} {r.text}")
        assert not errors, f"could not delete snapshots: {errors}"


def _start_ticker(sbx: Sandbox) -> int:
    """Write a file and start a loop appending a timestamp to /tmp/t; return the loop's PID."""
    sbx.write_file("/work/note.txt", "before")
    proc = sbx.start_process("sh", ["-c", LOOP])
    _wait_lines(sbx, 2)
    return proc.pid


def _lines(sbx: Sandbox) -> int:
    return len(sbx.read_file("/tmp/t").splitlines())


def _wait_lines(sbx: Sandbox, more_than: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            n = _lines(sbx)
        except NotFound:
            n = 0
        if n > more_than:
            return n
        assert time.monotonic() < deadline, f"/tmp/t has {n} lines, wanted more than {more_than}"
        time.sleep(0.2)


def _assert_state_kept(sbx: Sandbox, pid: int | None = None) -> None:
    """The file written before is there and the loop is (still) running: /tmp/t grows."""
    assert sbx.read_file("/work/note.txt") == b"before"
    running = [p for p in sbx.list_processes() if p.running and p.args == ["-c", LOOP]]
    assert running, [(p.pid, p.status, p.args) for p in sbx.list_processes()]
    if pid is not None:
        assert [p.pid for p in running] == [pid]
    _wait_lines(sbx, _lines(sbx))


@pytest.mark.root
def test_suspend_resume_keeps_files_and_processes(sandboxes, live_server):
    sbx = sandboxes.create(name=f"sdk-susp-{secrets.token_hex(4)}")
    pid = _start_ticker(sbx)
    info = sbx.suspend()
    assert info.status == "suspended" == sbx.status
    with SandboxClient(live_server.api_url) as c:
        assert c.get(sbx.id).status == "suspended"
        assert c.suspend(sbx.name).status == "suspended"  # by name; already suspended is fine
        assert c.resume(sbx.name, wait=False).status in ("suspended", "pending", "running")
        assert c.resume(sbx.id).status == "running"
    assert sbx.info().status == "running"
    _assert_state_kept(sbx, pid)
    # wait=False returns at once; the waiting call then settles it.
    assert sbx.suspend(wait=False).status in ("running", "suspending", "suspended")
    assert sbx.suspend(timeout=120).status == "suspended"
    assert sbx.resume().status == "running"
    _assert_state_kept(sbx, pid)


@pytest.mark.root
def test_suspending_an_ephemeral_sandbox_is_refused(sbx):
    with pytest.raises(InvalidRequest) as err:
        sbx.suspend()
    assert err.value.code == "SANDBOX_NOT_NAMED"
    assert sbx.info().status == "running"


@pytest.mark.root
def test_memory_snapshot_restores_files_and_processes(sandboxes, live_server, snapshot_ids):
    src = sandboxes.create()
    _start_ticker(src)
    snap = src.snapshot("memory")
    snapshot_ids.append(snap.id)
    assert (snap.status, snap.snapshot_type, snap.sandbox_id) == ("completed", "memory", src.id)
    assert src.info().status == "running"
    assert snap.id in [s.id for s in src.list_snapshots()]
    with SandboxClient(live_server.api_url) as c:
        assert snap.id in [s.id for s in c.list_snapshots()]
        assert c.get_snapshot(snap.id).id == snap.id
    restored = sandboxes.create(snapshot_id=snap.id, memory_mb=None)
    assert restored.id != src.id and restored.status == "running"
    assert restored.info().memory_mb == 512  # the snapshot's
    _assert_state_kept(restored)
    _assert_state_kept(src)  # the source ran on
    # The snapshot outlives its source; deleting it leaves the restored sandbox alone.
    src.terminate()
    with SandboxClient(live_server.api_url) as c:
        assert c.get_snapshot(snap.id).status == "completed"
        c.delete_snapshot(snap.id)
        with pytest.raises(SnapshotNotFoundError):
            c.get_snapshot(snap.id)
        c.delete_snapshot(snap.id)  # already gone is fine
    assert restored.run("cat", ["/work/note.txt"]).stdout == "before"


@pytest.mark.root
def test_filesystem_snapshot_restores_files_only(sandboxes, snapshot_ids):
    src = sandboxes.create()
    _start_ticker(src)
    snap = src.snapshot()
    snapshot_ids.append(snap.id)
    assert (snap.status, snap.snapshot_type) == ("completed", "filesystem")
    restored = sandboxes.create(snapshot_id=snap.id)
    assert restored.read_file("/work/note.txt") == b"before"
    assert restored.read_file("/tmp/t")  # the file is there...
    assert not [p for p in restored.list_processes() if p.args == ["-c", LOOP]]  # ...the process is not


@pytest.mark.root
def test_copy_gives_distinct_running_sandboxes(sandboxes, tracker):
    src = sandboxes.create()
    _start_ticker(src)
    copies = src.copy(times=2)
    try:
        for c in copies:
            tracker.add(c.id)
        ids = {c.id for c in copies}
        assert len(ids) == 2 and src.id not in ids
        for c in copies:
            assert c.status == "running" and c.name is None
            _assert_state_kept(c)
            assert c.run("hostname").stdout == c.id
    finally:
        for c in copies:
            c.close()
    _assert_state_kept(src)


@pytest.mark.root
def test_async_snapshot_and_copy(live_server, tracker, snapshot_ids):
    async def flow() -> None:
        async with AsyncSandboxClient(live_server.api_url) as c:
            info = await c.create(memory_mb=512)
            tracker.add(info.id)
            snap = await c.snapshot(info.id, wait=False)
            snapshot_ids.append(snap.id)
            assert snap.status in ("in_progress", "completed")
            copies = await c.copy(info.id)
            for copy in copies:
                tracker.add(copy.id)
            assert len(copies) == 1 and copies[0].status == "running" and copies[0].id != info.id
            assert snap.id in [s.id for s in await c.list_snapshots(info.id)]
            await c.delete_snapshot(snap.id)

    asyncio.run(flow())
