"""The unmodified tensorlake 0.5.163 client against cellbox (spec §9's checklist)."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import httpx
import pytest
from tensorlake.sandbox import SandboxError, SandboxStatus, StdinMode
from ..keys import auth

pytestmark = pytest.mark.root


def test_create_run_env_workdir_timeout(made):
    sbx = made.create()
    res = sbx.run("sh", ["-c", "echo $GREETING; pwd; echo oops >&2; exit 3"], env={"GREETING": "hi"},
                  working_dir="/tmp")
    assert (res.exit_code, res.stdout.splitlines(), res.stderr) == (3, ["hi", "/tmp"], "oops")
    slow = sbx.run("sleep", ["30"], timeout=1)
    assert slow.timed_out
    assert sbx.run("node", ["-v"]).stdout.startswith("v18")


def test_processes_follow_stdin_signal(made):
    sbx = made.create()
    proc = sbx.start_process("sh", ["-c", "read x; echo got:$x; for i in 1 2 3; do echo n$i; done"],
                             stdin_mode=StdinMode.PIPE)
    sbx.write_stdin(proc.pid, b"hello\n")
    lines = [e.line for e in sbx.follow_output(proc.pid)]
    assert lines == ["got:hello", "n1", "n2", "n3"]
    sleeper = sbx.start_process("sleep", ["300"])
    sbx.send_signal(sleeper.pid, 15)
    for _ in range(50):
        info = sbx.get_process(sleeper.pid)
        if info.status != "running":
            break
        time.sleep(0.1)
    assert info.signal == 15


def test_files_and_large_transfer(made, tmp_path):
    sbx = made.create()
    sbx.write_file("/work/a.txt", b"alpha")
    assert sbx.read_file("/work/a.txt").value == b"alpha"
    names = [e.name for e in sbx.list_directory("/work").entries]
    assert names == ["a.txt"]
    sbx.delete_file("/work/a.txt")
    with pytest.raises(SandboxError):
        sbx.read_file("/work/a.txt")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(50 << 20))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    sbx.upload_file(big, "/work/big.bin")
    assert sbx.run("sha256sum", ["/work/big.bin"]).stdout.split()[0] == digest
    assert hashlib.sha256(sbx.read_file("/work/big.bin").value).hexdigest() == digest


def test_pty_exit_code(made):
    sbx = made.create()
    out = bytearray()
    pty = sbx.create_pty("/bin/sh", on_data=out.extend)
    pty.send_input(b"echo from-pty; exit 7\n")
    assert pty.wait(timeout=20) == 7
    assert b"from-pty" in out


def test_tunnel_to_http_server(made):
    sbx = made.create()
    sbx.start_process("python3", ["-m", "http.server", "8000", "--directory", "/etc"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tunnel = sbx.create_tunnel(8000, local_port=port)
    try:
        for _ in range(100):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/hostname", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert r.status_code == 200 and r.text.strip() == sbx.sandbox_id
    finally:
        tunnel.close()


def test_get_list_delete_and_name_conflict(made, client):
    sbx = made.create(name="compat-named")
    info = client.get(sbx.sandbox_id)
    assert info.status == SandboxStatus.RUNNING and info.name == "compat-named"
    assert client.get("compat-named").sandbox_id == sbx.sandbox_id
    assert sbx.sandbox_id in [s.sandbox_id for s in client.list()]
    with pytest.raises(Exception) as err:
        made.create(name="compat-named")
    assert "409" in str(err.value)
    client.delete(sbx.sandbox_id)
    assert client.get(sbx.sandbox_id).status == SandboxStatus.TERMINATED


def test_suspend_resume(made, client):
    sbx = made.create(name=f"compat-susp-{os.getpid()}")
    sbx.write_file("/data/keep.txt", b"before")
    proc = sbx.start_process("sh", ["-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.2; done"])
    sbx.suspend()
    assert client.get(sbx.sandbox_id).status == SandboxStatus.SUSPENDED
    sbx.resume()
    assert client.get(sbx.sandbox_id).status == SandboxStatus.RUNNING
    assert sbx.read_file("/data/keep.txt").value == b"before"
    assert sbx.get_process(proc.pid).status == "running"
    ephemeral = made.create()
    with pytest.raises(Exception) as err:
        ephemeral.suspend()
    assert "400" in str(err.value) or "named" in str(err.value)


def test_snapshots_and_restore(made, client):
    from tensorlake.sandbox import CheckpointType

    src = made.create()
    src.write_file("/data/f", b"from-snapshot")
    src.start_process("sleep", ["600"])
    snap = src.checkpoint(checkpoint_type=CheckpointType.MEMORY)
    try:
        info = client.get_snapshot(snap.snapshot_id)
        assert info.sandbox_id == src.sandbox_id
        assert snap.snapshot_id in [s.snapshot_id for s in client.list_snapshots()]
        restored = made.create(snapshot_id=snap.snapshot_id)
        assert restored.read_file("/data/f").value == b"from-snapshot"
        assert "sleep" in [p.command for p in restored.list_processes()]
    finally:
        client.delete_snapshot(snap.snapshot_id)
    assert snap.snapshot_id not in [s.snapshot_id for s in client.list_snapshots()]


def test_copy(made, live_server):
    src = made.create()
    src.write_file("/data/f", b"copied")
    resp = src.copy(times=2).value
    made.ids.extend(c.sandbox_id for c in resp.sandboxes)
    assert resp.source_sandbox_id == src.sandbox_id and len(resp.sandboxes) == 2
    assert all(c.status == "running" for c in resp.sandboxes)
    for c in resp.sandboxes:
        r = httpx.get(f"http://127.0.0.1:{live_server.proxy_port}/api/v1/files", params={"path": "/data/f"},
                      headers={"Host": f"{c.sandbox_id}.local", **auth()}, timeout=30)
        assert r.content == b"copied"
