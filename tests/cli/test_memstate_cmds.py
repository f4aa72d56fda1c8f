"""``cellbox suspend``, ``resume``, ``snapshot``/``checkpoint``, ``clone``/``copy``, ``new --snapshot``
and ``ls -a``, run as subprocesses against a live server; every sandbox and snapshot made is deleted."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from ..keys import auth

pytestmark = pytest.mark.root

LOOP = "while :; do date +%s%N >> /tmp/t; sleep 0.2; done"


@pytest.fixture
def snapshot_ids(live_server) -> Iterator[list[str]]:
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


def _start_ticker(cli, sid: str) -> int:
    cli("exec", sid, "sh", "-c", "mkdir -p /work && echo before > /work/note.txt")
    pid = int(cli("exec", "--detach", sid, "sh", "-c", LOOP).stdout)
    _wait_growing(cli, sid)
    return pid


def _lines(cli, sid: str) -> int:
    proc = cli("exec", sid, "sh", "-c", "wc -l < /tmp/t 2>/dev/null || echo 0")
    return int(proc.stdout.strip() or 0)


def _wait_growing(cli, sid: str, timeout: float = 20) -> None:
    start = _lines(cli, sid)
    deadline = time.monotonic() + timeout
    while _lines(cli, sid) <= start:
        assert time.monotonic() < deadline, f"/tmp/t in {sid} stopped growing"
        time.sleep(0.3)


def _loops(cli, sid: str) -> list[int]:
    procs = json.loads(cli("ps", sid, "--json").stdout)
    return [p["pid"] for p in procs if p["status"] == "running" and p.get("args") == ["-c", LOOP]]


def _assert_state_kept(cli, sid: str, pid: int | None = None) -> None:
    assert cli("exec", sid, "cat", "/work/note.txt").stdout == "before\n"
    loops = _loops(cli, sid)
    assert loops if pid is None else loops == [pid], loops
    _wait_growing(cli, sid)


def _status(cli, sid: str) -> str:
    return json.loads(cli("describe", sid, "--json").stdout)["status"]


def test_suspend_resume(cli):
    name = f"cli-susp-{secrets.token_hex(4)}"
    sid = cli.new(name)
    pid = _start_ticker(cli, sid)
    assert cli("suspend", name).stdout.strip() == sid
    assert _status(cli, sid) == "suspended"
    assert sid in cli("ls", "-q").stdout.split()  # suspended sandboxes are live
    assert cli("resume", sid).stdout.strip() == sid
    assert _status(cli, sid) == "running"
    _assert_state_kept(cli, sid, pid)
    # -n returns at once; the waiting form then settles it; --json prints the SandboxInfo.
    assert cli("suspend", "-n", sid).stdout.strip() == sid
    assert json.loads(cli("suspend", sid, "--json").stdout)["status"] == "suspended"
    assert cli("resume", "--no-wait", sid).stdout.strip() == sid
    assert json.loads(cli("resume", sid, "--json").stdout)["status"] == "running"
    _assert_state_kept(cli, sid, pid)


def test_suspend_errors_exit_1(cli, sandbox_id):
    proc = cli("suspend", sandbox_id, check=False)  # ephemeral: cannot be suspended
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and proc.stdout == ""
    assert _status(cli, sandbox_id) == "running"
    proc = cli("resume", "no-such-sandbox-here", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ")
    assert cli("suspend", check=False).returncode == 2  # usage


def test_snapshot_ls_new_from_snapshot_and_rm(cli, snapshot_ids):
    src = cli.new()
    _start_ticker(cli, src)
    mem = cli("snapshot", src, "--type", "memory").stdout.strip()
    snapshot_ids.append(mem)
    fs = cli("checkpoint", "create", src).stdout.strip()  # the tl alias, explicit subcommand
    snapshot_ids.append(fs)
    assert len({mem, fs}) == 2 and all(len(s) == 21 for s in (mem, fs))
    listed = {s["id"]: s for s in json.loads(cli("snapshot", "ls", "--json").stdout)}
    assert listed[mem]["snapshot_type"] == "memory" and listed[fs]["snapshot_type"] == "filesystem"
    assert listed[mem]["status"] == listed[fs]["status"] == "completed"
    assert listed[mem]["sandbox_id"] == src
    assert set(cli("snapshot", "ls", "-q", src).stdout.split()) == {mem, fs}
    assert mem in cli("checkpoint", "ls").stdout  # the table
    # Restore: the memory snapshot brings the process back, the filesystem one only files.
    from_mem = cli.tracker.add(cli("new", "--snapshot", mem).stdout.strip())
    from_fs = cli.tracker.add(cli("new", "-s", fs, "-m", "512").stdout.strip())
    assert len({src, from_mem, from_fs}) == 3
    _assert_state_kept(cli, from_mem)
    assert cli("exec", from_fs, "cat", "/work/note.txt").stdout == "before\n"
    assert _loops(cli, from_fs) == []
    rm = cli("snapshot", "rm", mem, fs)
    assert rm.stdout.split() == [mem, fs]
    assert not {mem, fs} & set(cli("snapshot", "ls", "-q").stdout.split())
    assert _status(cli, from_mem) == "running"  # restored sandboxes do not depend on it


def test_snapshot_errors_exit_1(cli):
    proc = cli("snapshot", "no-such-sandbox-here", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ")
    proc = cli("new", "--snapshot", "nosuchsnapshot0000000", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ")
    assert cli("snapshot", "x", "--type", "disk", check=False).returncode == 2


def test_clone_and_copy(cli):
    src = cli.new()
    _start_ticker(cli, src)
    out = cli("clone", src, "-n", "2").stdout.split()
    for sid in out:
        cli.tracker.add(sid)
    one = cli("copy", src, "--json").stdout
    copies = json.loads(one)
    for c in copies:
        cli.tracker.add(c["id"])
    assert len(out) == 2 and len(copies) == 1
    ids = {*out, copies[0]["id"]}
    assert len(ids) == 3 and src not in ids
    for sid in ids:
        assert _status(cli, sid) == "running"
        _assert_state_kept(cli, sid)
    assert cli("clone", src, "-n", "0", check=False).returncode == 2
    proc = cli("clone", "no-such-sandbox-here", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ")


def test_ls_all_includes_terminated(cli):
    sid = cli.new()
    cli("terminate", sid)
    assert sid not in cli("ls", "-q").stdout.split()
    assert sid in cli("ls", "-a", "-q").stdout.split()
    listed = {s["id"]: s["status"] for s in json.loads(cli("ls", "--all", "--json").stdout)}
    assert listed[sid] == "terminated"
