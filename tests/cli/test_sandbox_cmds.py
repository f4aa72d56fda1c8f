"""The ``cellbox`` sandbox verbs, run as subprocesses against a live server."""

from __future__ import annotations

import hashlib
import json
import os
import secrets

import pytest

from ..sdk.live_server import CELLBOX

pytestmark = pytest.mark.root


def test_new_ls_describe_terminate(cli):
    sid = cli.new()
    assert len(sid) == 21 and "\n" not in sid
    listed = json.loads(cli("ls", "--json").stdout)
    mine = [s for s in listed if s["id"] == sid]
    assert mine and mine[0]["status"] == "running"
    assert sid in cli("ls", "-q").stdout.split()
    assert sid in cli("ls", "-r", "-q").stdout.split()
    assert sid in cli("ls").stdout  # the human table
    info = json.loads(cli("describe", sid, "--json").stdout)
    assert info["id"] == sid and info["resources"]["memory_mb"] == 512
    assert "running" in cli("info", sid).stdout
    assert cli("terminate", sid).stdout.strip() == sid
    assert sid not in cli("ls", "-q").stdout.split()


def test_new_with_name_and_options(cli):
    name = f"cli-named-{secrets.token_hex(4)}"
    sid = cli.new(name, "-c", "1", "-t", "600", "-x", "8080")
    info = json.loads(cli("describe", name, "--json").stdout)
    assert info["id"] == sid and info["name"] == name and info["timeout_secs"] == 600
    assert info["exposed_ports"] == [8080]
    assert cli("port", "expose", sid, "3000").stdout.split() == ["3000", "8080"]
    assert cli("port", "rm", sid, "8080").stdout.split() == ["3000"]
    assert cli("port", "ls", sid).stdout.split() == ["3000"]
    new_name = f"cli-renamed-{secrets.token_hex(4)}"
    cli("name", sid, new_name)
    assert json.loads(cli("describe", new_name, "--json").stdout)["id"] == sid
    assert cli("stop", new_name).returncode == 0


def test_exec_streams_and_propagates_exit_code(cli, sandbox_id):
    proc = cli("exec", sandbox_id, "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "out\n", "err\n")
    proc = cli("exec", "-w", "/tmp", "-e", "A=1", "-e", "B=two", sandbox_id, "sh", "-c", 'echo "$A $B $(pwd)"')
    assert proc.stdout == "1 two /tmp\n"
    proc = cli("exec", "-t", "1", sandbox_id, "sleep", "30", check=False)
    assert proc.returncode == 137 and "timed out" in proc.stderr
    proc = cli("exec", sandbox_id, "ls", "-la", "/")  # the command's own options pass through
    assert "tmp" in proc.stdout
    assert cli("exec", sandbox_id, "--", "printf", "%s\\n", "--help").stdout == "--help\n"
    pid = int(cli("exec", "--detach", sandbox_id, "sleep", "300").stdout)
    ps = json.loads(cli("ps", sandbox_id, "--json").stdout)
    assert any(p["pid"] == pid and p["status"] == "running" for p in ps)
    assert "sleep 300" in cli("ps", sandbox_id).stdout
    cli("kill", sandbox_id, str(pid))
    assert json.loads(cli("ps", sandbox_id, str(pid), "--json").stdout)["status"] != "running"


def test_exec_errors_are_one_line(cli, sandbox_id):
    proc = cli("exec", sandbox_id, "no-such-command", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    proc = cli("describe", "no-such-sandbox", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ")


def test_cp_both_ways(cli, sandbox_id, tmp_path):
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(5 << 20) + b"end")
    cli("cp", str(src), f"{sandbox_id}:/work/in/data.bin")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert cli("exec", sandbox_id, "sha256sum", "/work/in/data.bin").stdout.split()[0] == digest
    cli("cp", str(src), f"{sandbox_id}:/work/in/")  # into a directory: keeps the name
    cli("exec", sandbox_id, "cp", "/work/in/data.bin", "/work/in/copy.bin")
    out = tmp_path / "out"
    out.mkdir()
    cli("cp", f"{sandbox_id}:/work/in/copy.bin", str(out))
    assert hashlib.sha256((out / "copy.bin").read_bytes()).hexdigest() == digest
    cli("cp", f"{sandbox_id}:/work/in/copy.bin", str(tmp_path / "renamed.bin"))
    assert (tmp_path / "renamed.bin").read_bytes() == src.read_bytes()
    proc = cli("cp", f"{sandbox_id}:/no/such", str(tmp_path / "x"), check=False)
    assert proc.returncode == 1 and not (tmp_path / "x").exists()


def test_run_creates_runs_and_terminates(cli, live_server):
    proc = cli("run", "-m", "512", "sh", "-c", "hostname; exit 3", check=False)
    assert proc.returncode == 3, proc.stderr
    sid = proc.stdout.strip()  # the hostname is the sandbox ID
    cli.tracker.add(sid)
    everything = {s["id"]: s["status"] for s in json.loads(cli("ls", "-a", "--json").stdout)}
    assert everything.get(sid, "terminated") == "terminated"
    assert sid not in cli("ls", "-q").stdout.split()

    proc = cli("run", "-k", "-m", "512", "hostname")
    sid = proc.stderr.strip().split()[-1]
    cli.tracker.add(sid)
    assert proc.stdout.strip() == sid
    assert sid in cli("ls", "-q").stdout.split()


def test_help_lists_the_verbs():
    import subprocess

    out = subprocess.run([str(CELLBOX), "--help"], capture_output=True, text=True, check=True).stdout
    verbs = "new create ls describe info terminate stop exec run cp ps kill ssh tunnel name port".split()
    for verb in verbs:
        assert f"  {verb} " in out, verb
