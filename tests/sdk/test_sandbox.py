"""The sync SDK against a live server: lifecycle, commands, processes, files."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import time

import pytest

from cellbox.errors import CellboxError, InvalidRequest, NotFound
from cellbox.sdk import Sandbox, SandboxClient, SandboxNotFoundError

pytestmark = pytest.mark.root


def _status(api_url: str, sandbox_id: str) -> str:
    with SandboxClient(api_url) as c:
        try:
            return c.get(sandbox_id).status
        except SandboxNotFoundError:
            return "gone"


def test_create_run_terminate(sandboxes, live_server):
    sbx = sandboxes.create(cpus=1.0, memory_mb=512)
    assert sbx.status == "running" and sbx.name is None and len(sbx.id) == 21
    info = sbx.info()
    assert (info.id, info.cpus, info.memory_mb) == (sbx.id, 1.0, 512)
    res = sbx.run("echo", ["hello", "world"])
    assert (res.exit_code, res.stdout, res.stderr, res.timed_out) == (0, "hello world", "", False)
    res = sbx.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out", "err")
    sbx.terminate()
    assert sbx.status == "terminated"
    assert _status(live_server.api_url, sbx.id) in ("terminated", "gone")


def test_env_working_dir_user_and_timeout(sbx):
    script = 'echo "$GREETING $(pwd) $(id -u)"'
    res = sbx.run("sh", ["-c", script], env={"GREETING": "hi"}, working_dir="/tmp", user="1000")
    assert res.stdout == "hi /tmp 1000", res
    started = time.monotonic()
    res = sbx.run("sleep", ["30"], timeout=1)
    assert res.timed_out and res.exit_code != 0 and time.monotonic() - started < 15
    res = sbx.run("sh", ["-c", "kill -TERM $$"])
    assert (res.exit_code, res.signal, res.timed_out) == (-15, 15, False)


def test_run_streams_lines(sbx):
    seen = []
    res = sbx.run(["sh", "-c", "for i in 1 2 3; do echo $i; done; echo e >&2"], on_output=seen.append)
    got = [(line.stream, line.line) for line in seen]
    assert got == [("stdout", "1"), ("stdout", "2"), ("stdout", "3"), ("stderr", "e")]
    assert res.stdout == "1\n2\n3"


def test_start_process_follow_stdin_and_signal(sbx):
    cat = sbx.start_process("cat", stdin_mode="pipe")
    assert cat.pid > 0
    cat.write_stdin("hello\n")
    cat.write_stdin(b"world\n")
    cat.close_stdin()
    assert list(cat.follow_output()) == ["hello", "world"]
    assert cat.wait(timeout=30) == 0
    assert cat.output("stdout") == ["hello", "world"]

    sleeper = sbx.start_process("sh", ["-c", "echo started; exec sleep 300"])
    deadline = time.monotonic() + 10
    while sleeper.output() != ["started"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleeper.info().running
    assert sleeper.pid in [p.pid for p in sbx.list_processes() if p.running]
    sleeper.send_signal(signal.SIGTERM)
    assert sleeper.wait(timeout=30) == -signal.SIGTERM
    info = sleeper.info()
    assert (info.status, info.signal) == ("signaled", signal.SIGTERM)

    victim = sbx.start_process("sleep", ["300"])
    victim.kill()
    assert victim.wait(timeout=30) == -signal.SIGKILL


def test_files_write_read_list_delete(sbx):
    sbx.write_file("/work/dir/hello.txt", "hi there")
    sbx.write_file("/work/dir/bin.dat", bytes(range(256)))
    assert sbx.read_file("/work/dir/hello.txt") == b"hi there"
    assert sbx.read_file("/work/dir/bin.dat") == bytes(range(256))
    entries = {e.name: e for e in sbx.list_directory("/work/dir")}
    assert set(entries) == {"hello.txt", "bin.dat"}
    assert entries["hello.txt"].size == 8 and not entries["hello.txt"].is_dir
    assert sbx.run("cat", ["/work/dir/hello.txt"]).stdout == "hi there"
    sbx.delete_file("/work/dir/hello.txt")
    with pytest.raises(NotFound):
        sbx.read_file("/work/dir/hello.txt")
    assert [e.name for e in sbx.list_directory("/work/dir")] == ["bin.dat"]


def test_upload_download_50_mib(sbx, tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert sbx.upload_file(src, "/tmp/big.bin") == 50 << 20
    remote = sbx.run("sha256sum", ["/tmp/big.bin"]).stdout.split()[0]
    assert remote == digest
    dst = tmp_path / "back.bin"
    assert sbx.download_file("/tmp/big.bin", dst) == 50 << 20
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == digest
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_context_manager_terminates_ephemeral_only(live_server, tracker):
    with Sandbox.create(memory_mb=512, api_url=live_server.api_url) as sbx:
        tracker.add(sbx.id)
        assert sbx.run("true").exit_code == 0
    assert _status(live_server.api_url, sbx.id) in ("terminated", "gone")

    name = f"sdk-named-{secrets.token_hex(4)}"
    with Sandbox.create(name=name, memory_mb=512, api_url=live_server.api_url) as named:
        tracker.add(named.id)
        assert named.name == name
    assert _status(live_server.api_url, named.id) == "running"

    with Sandbox.connect(name, api_url=live_server.api_url) as again:
        assert again.id == named.id
        assert again.run("echo", ["still here"]).stdout == "still here"
    assert _status(live_server.api_url, named.id) == "running"


def test_rename_and_ports(sbx):
    name = f"sdk-renamed-{secrets.token_hex(4)}"
    assert sbx.set_name(name).name == name
    assert sbx.name == name
    assert sbx.expose_ports([8080, 3000]).exposed_ports == [3000, 8080]
    assert sbx.unexpose_ports([3000]).exposed_ports == [8080]
    with Sandbox.connect(name, api_url=sbx.client.api_url) as by_name:
        assert by_name.id == sbx.id


def test_errors_are_mapped(sbx, live_server):
    with pytest.raises(SandboxNotFoundError):
        Sandbox.connect("no-such-sandbox-here", api_url=live_server.api_url)
    with pytest.raises(InvalidRequest) as err:
        sbx.run("definitely-not-a-command")
    assert err.value.code == "COMMAND_NOT_FOUND"
    with pytest.raises(NotFound):
        sbx.read_file("/no/such/file")
    with pytest.raises(CellboxError):
        sbx.get_process(999999).info()


def test_bounded_reads(sbx):
    """``read_file(max_bytes=)`` stops the download past the bound; ``output(tail=,
    max_bytes=)`` gets only the newest lines (what the MCP server relies on)."""
    sbx.write_file("/work/big.bin", b"0123456789" * 100_000)
    assert sbx.read_file("/work/big.bin", max_bytes=25) == b"0123456789" * 2 + b"012345"  # 26: "there is more"
    assert sbx.read_file("/work/big.bin", max_bytes=2_000_000) == b"0123456789" * 100_000
    with pytest.raises(NotFound):
        sbx.read_file("/work/none", max_bytes=10)
    proc = sbx.start_process("sh", ["-c", "for i in $(seq 1 50); do echo line$i; done"])
    proc.wait(30)
    assert proc.output(tail=2) == ["line49", "line50"]
    assert proc.output(max_bytes=14) == ["line49", "line50"]
    assert len(proc.output()) == 50
