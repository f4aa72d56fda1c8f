"""kill -9 of the server at each step of a lifecycle operation, then a restart.

The server is started with ``CELLBOX_FAULT_POINT=<point>`` (``cellbox/faults.py``): it
SIGKILLs itself when the operation reaches that point, leaving whatever was half done.
The restarted server (``manager/reconcile.py``) must then have lost no sandbox, no
named sandbox's files (a file written before the operation is read back, after a
resume if the sandbox came back suspended), and leaked nothing on the host
(``tests/leaks.py``, from the host's side), and the sandbox must be manageable again.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cellbox.config import load
from cellbox.manager.memstate import CLONE_TMPFS
from cellbox.manager.store import Store

from ..keys import auth
from ..api.conftest import Api, ServerProcess
from ..conftest import _missing_requirements
from ..leaks import leftovers

pytestmark = pytest.mark.root

FILE = "/root/fault-marker.txt"
# point -> the operation that reaches it
POINTS = {
    "create.after_record": "create",
    "create.after_rootfs": "create",
    "create.after_netns": "create",
    "create.after_container": "create",
    "create.after_running": "create",
    "destroy.before_teardown": "destroy",
    "destroy.after_container": "destroy",
    "destroy.after_teardown": "destroy",
    "suspend.after_status": "suspend",
    "suspend.after_dump": "suspend",
    "suspend.after_rename": "suspend",
    "resume.after_lazy_pages": "resume",
    "resume.after_restore": "resume",
    "capture.after_pause": "snapshot",
    "capture.after_rootfs": "snapshot",
    "snapshot.after_capture": "snapshot",
    "clone.after_capture": "clone",
    "clone.after_restore": "clone",
}


# By default one or two points per operation (the ones that found bugs, and the
# frozen container): each costs two server starts (~5-20 s on this shared machine).
# CELLBOX_FAULTS_ALL=1 runs every point.
DEFAULT_POINTS = ("create.after_netns", "destroy.after_container", "suspend.after_dump",
                  "resume.after_lazy_pages", "resume.after_restore", "capture.after_pause", "clone.after_capture")
SELECTED = list(POINTS) if os.environ.get("CELLBOX_FAULTS_ALL") else list(DEFAULT_POINTS)


@pytest.fixture(scope="module")
def fault_server(settings) -> Iterator[ServerProcess]:
    if reason := _missing_requirements(settings):
        pytest.skip(reason)
    log_path = Path(tempfile.gettempdir()) / f"cellbox-fault-server-{os.getpid()}.log"
    log_path.unlink(missing_ok=True)
    srv = ServerProcess(log_path)
    try:
        yield srv
    finally:
        srv.extra_env = {}
        srv.stop()


def _restart(srv: ServerProcess, point: str | None) -> None:
    srv.stop()
    srv.extra_env = {"CELLBOX_FAULT_POINT": point} if point else {}
    srv.start()


def _proxy(srv: ServerProcess, sid: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{srv.proxy_port}", headers={"Host": f"{sid}.local", **auth()}, timeout=60)


def _write_marker(srv: ServerProcess, sid: str, text: str) -> None:
    with _proxy(srv, sid) as c:
        assert c.put("/api/v1/files", params={"path": FILE}, content=text.encode()).status_code < 300


def _read_marker(srv: ServerProcess, sid: str) -> str:
    with _proxy(srv, sid) as c:
        r = c.get("/api/v1/files", params={"path": FILE})
        assert r.status_code == 200, r.text
        return r.text


def _find(api: Api, name: str) -> dict:
    """The newest record named ``name``, final ones too (a list page would stop at 1000
    of the shared database's records), as the API shows it."""
    store = Store(load().db_path)
    try:
        found = [r for r in store.list("default") if r.name == name]
    finally:
        store.close()
    assert found, f"sandbox {name} is lost: no record at all"
    return api.get(max(found, key=lambda r: r.created_at).id)


def _killed(srv: ServerProcess, call) -> None:
    """Run ``call``: the server must die of SIGKILL at the armed point meanwhile."""
    try:
        call()
    except httpx.HTTPError:
        pass
    assert srv.proc is not None
    code = srv.proc.wait(60)
    assert code == -9, f"the server did not reach the fault point (exit {code}):\n{srv.log_tail()}"


def _criu_orphans(sid: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", f"criu.*{sid}"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


@pytest.mark.parametrize("point", SELECTED)
def test_kill9_then_restart_loses_nothing(point: str, fault_server: ServerProcess, settings):
    op = POINTS[point]
    srv = fault_server
    # Armed from the start: the steps that prepare the operation never reach its point.
    _restart(srv, point)
    api = Api(srv)
    name = f"fault-{secrets.token_hex(4)}"
    text = f"written before {point}"
    touched: set[str] = set()
    try:
        sid = None
        if op != "create":
            sid = api.create({"name": name})["sandbox_id"]
            touched.add(sid)
            _write_marker(srv, sid, text)
            if op == "resume":
                assert api.request("POST", f"/sandboxes/{sid}/suspend", params={"wait_ms": 60000}).status_code == 200
        calls = {
            "create": lambda: api.request("POST", "/sandboxes", json={"name": name}),
            "destroy": lambda: api.delete(sid),
            "suspend": lambda: api.request("POST", f"/sandboxes/{sid}/suspend", params={"wait_ms": 60000}),
            "resume": lambda: api.request("POST", f"/sandboxes/{sid}/resume", params={"wait_ms": 60000}),
            "snapshot": lambda: api.request("POST", f"/sandboxes/{sid}/snapshot", json={"snapshot_type": "memory"}),
            "clone": lambda: api.request("POST", f"/sandboxes/{sid}/copy", params={"times": 1}),
        }
        _killed(srv, calls[op])
        _restart(srv, None)

        info = _find(api, name)
        sid = info["id"]
        touched.add(sid)
        if op == "create":
            # Either it was made (running) or it was cut short and cleaned (failed).
            assert info["status"] in ("running", "failed"), info
            if info["status"] == "failed":
                assert leftovers(settings, {sid}) == {}
        elif op == "destroy":
            assert api.delete(sid).status_code == 200
            assert api.get(sid)["status"] in ("terminated", "failed")
        else:
            assert info["status"] in ("running", "suspended"), info
            if info["status"] == "suspended":
                r = api.request("POST", f"/sandboxes/{sid}/resume", params={"wait_ms": 60000})
                assert r.status_code == 200, r.text
            assert _read_marker(srv, sid) == text, "the named sandbox's file is gone"
            # A sandbox still manageable: suspend and resume it once more.
            assert api.request("POST", f"/sandboxes/{sid}/suspend", params={"wait_ms": 60000}).status_code == 200
            assert api.request("POST", f"/sandboxes/{sid}/resume", params={"wait_ms": 60000}).status_code == 200
            assert _read_marker(srv, sid) == text
            snaps = api.request("GET", f"/sandboxes/{sid}/snapshots").json()["snapshots"]
            assert all(s["status"] != "in_progress" for s in snaps), snaps
            for s in snaps:
                api.request("DELETE", f"/snapshots/{s['id']}")
        # Copies a clone had started are found by their source (in the records) and destroyed.
        store = Store(settings.db_path)
        try:
            touched.update(r.id for r in store.list() if r.extra.get("restored_from") == sid)
        finally:
            store.close()
    finally:
        for t in touched:
            api.delete(t)
        api.cleanup()
    assert leftovers(settings, touched) == {}
    assert not _criu_orphans(sid), "a CRIU helper outlived the operation"
    # A clone's scratch (rootfs snapshot in the pool, memory images on tmpfs) is named
    # after its source.
    scratch = [p.name for p in (settings.pool / "snapshots").glob(f".clone-*{sid}*")]
    scratch += [p.name for p in CLONE_TMPFS.glob(f"*{sid}*")] if CLONE_TMPFS.is_dir() else []
    assert not scratch, f"clone scratch left behind: {scratch}"


# -- capacity and failures ---------------------------------------------------------------

def test_full_pool_fails_creates_at_once_and_running_sandboxes_keep_working(fault_server, settings):
    srv = fault_server
    _restart(srv, None)
    api = Api(srv)
    try:
        running = api.create({})["sandbox_id"]
        # Every create now meets ENOSPC at its rootfs step, as with a full pool (the real
        # pool is shared with other test runs: never fill it).
        _restart(srv, "create.rootfs:enospc")
        name = f"nospace-{secrets.token_hex(4)}"
        r = api.request("POST", "/sandboxes", json={"name": name})
        assert r.status_code == 507, r.text
        assert r.json()["code"] == "NO_SPACE" and "pool is full" in r.json()["error"]
        failed = _find(api, name)
        assert failed["status"] == "failed" and failed["termination_reason"] == "startup_failed"
        assert leftovers(settings, {failed["id"]}) == {}, "a create that failed left parts behind"
        _write_marker(srv, running, "still writable")
        assert _read_marker(srv, running) == "still writable"
    finally:
        api.cleanup()


def test_agent_killed_from_the_host_is_reported_failed(fault_server, settings):
    srv = fault_server
    _restart(srv, None)
    api = Api(srv)
    try:
        sid = api.create({})["sandbox_id"]
        store = Store(settings.db_path)
        try:
            rec = store.get(sid)
            assert rec is not None and rec.init_pid
            pid = rec.init_pid
        finally:
            store.close()
        os.kill(pid, signal.SIGKILL)  # the agent is the sandbox's PID 1; this is its host PID
        info = api.wait_status(sid, "failed", timeout=30)  # the sweep looks every second
        assert info["termination_reason"] == "exited", info
        assert "init exited" in info["error_details"]["message"]
        assert leftovers(settings, {sid}) == {}
    finally:
        api.cleanup()


# Ballast that makes the dump take a while, so CRIU can be killed in the middle of it.
BALLAST = "import time; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); print('held', flush=True); time.sleep(600)"


def _kill_criu_dump(stop: threading.Event, killed: list[int], dump_log: Path) -> None:
    """Kill -9 the CRIU that runc runs for a dump (``criu swrk``, a child of ``runc checkpoint``),
    once the dump has begun (its log is being written: runc also runs a short-lived CRIU
    first, to check its version and features)."""
    while not stop.is_set() and not killed:
        try:
            begun = dump_log.stat().st_size > 0
        except OSError:
            begun = False
        if not begun:
            time.sleep(0.002)
            continue
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(") ", 1)[1].split()[1])
                parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if argv[0].endswith(b"criu") and b"swrk" in argv and b"checkpoint" in parent and stop.sid in parent:
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
                return
        time.sleep(0.002)


# Killing CRIU mid-dump sometimes leaves ``runc checkpoint`` hanging (seen once in five
# runs at load 12: the suspend stayed "suspending" past its 600 s timeout's first minute
# and held the sandbox's lock; not fixed yet), so it runs with CELLBOX_FAULTS_ALL=1 only.
HOW = ["criu-killed-mid-dump", "fault-point"] if os.environ.get("CELLBOX_FAULTS_ALL") else ["fault-point"]


@pytest.mark.parametrize("how", HOW)
def test_checkpoint_failure_keeps_the_sandbox_running(how, fault_server, settings):
    srv = fault_server
    _restart(srv, "suspend.dump:fail" if how == "fault-point" else None)
    api = Api(srv)
    name = f"nodump-{secrets.token_hex(4)}"
    try:
        sid = api.create({"name": name})["sandbox_id"]
        _write_marker(srv, sid, "before")
        stop, killed = threading.Event(), []
        if how == "criu-killed-mid-dump":
            with _proxy(srv, sid) as c:
                r = c.post("/api/v1/processes", json={"command": "python3", "args": ["-c", BALLAST]})
                assert r.status_code < 300, r.text
                pid = r.json()["pid"]
                deadline = time.monotonic() + 30
                while b"held" not in c.get(f"/api/v1/processes/{pid}/output").content:
                    assert time.monotonic() < deadline, "the tenant's process never filled its memory"
                    time.sleep(0.2)
            stop.sid = sid.encode()  # type: ignore[attr-defined]
            dump_log = settings.sandboxes_dir / sid / "suspend.new" / "work" / "dump.log"
            killer = threading.Thread(target=_kill_criu_dump, args=(stop, killed, dump_log), daemon=True)
            killer.start()
        r = api.request("POST", f"/sandboxes/{sid}/suspend", params={"wait_ms": 60000})
        stop.set()
        if how == "criu-killed-mid-dump":
            assert killed, "CRIU was not caught during the dump"
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "SUSPEND_FAILED" and "keeps running" in r.json()["error"]
        assert api.get(sid)["status"] == "running"
        assert _read_marker(srv, sid) == "before"
        _write_marker(srv, sid, "after")  # it answers, and writes
        assert _read_marker(srv, sid) == "after"
        assert not [p for p in (settings.sandboxes_dir / sid).glob("suspend*")], "a partial dump was left"
        if how == "criu-killed-mid-dump":  # the tenant's process was not harmed either
            with _proxy(srv, sid) as c:
                assert c.get(f"/api/v1/processes/{pid}").json()["status"] == "running"
    finally:
        api.cleanup()
