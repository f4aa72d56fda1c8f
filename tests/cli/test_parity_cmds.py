"""``cellbox logs``, ``resize``, ``archived`` and ``pool …`` as subprocesses against a
live server (issue 14); every verb's ``--json`` is read back."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.root


def test_logs_resize_archived(cli):
    sid = cli.new("-e", "/bin/sh", "-e", "-c", "-e", "echo first; echo second-needle; exec sleep 600")
    deadline = time.monotonic() + 20
    while "second-needle" not in cli("logs", sid).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert cli("logs", sid, "--grep", "needle").stdout.splitlines() == ["second-needle"]
    entries = json.loads(cli("logs", sid, "--tail", "1", "--json").stdout)
    assert [e["body"] for e in entries] == ["second-needle"]
    procs = json.loads(cli("logs", sid, "--processes", "--json").stdout)
    assert any(p["processCommand"] == "/bin/sh" for p in procs)
    assert cli("logs", sid, "--level", "error").stdout == ""
    bad = cli("logs", sid, "--level", "loud", check=False)
    assert bad.returncode == 1 and "level" in bad.stderr

    out = json.loads(cli("resize", sid, "--memory", "768", "--cpus", "2", "--json").stdout)
    assert out["resources"]["memory_mb"] == 768 and out["resource_resize"]["status"] == "succeeded"
    assert "768 MB memory" in cli("resize", sid, "-m", "768").stdout
    shrink = cli("resize", sid, "--disk-mb", "1", check=False)
    assert shrink.returncode == 1 and "disk" in shrink.stderr
    assert cli("resize", sid, check=False).returncode == 2  # nothing to change: usage error

    cli("terminate", sid)
    archived = json.loads(cli("archived", "describe", sid, "--json").stdout)
    assert archived["status"] == "terminated" and archived["archived_at"]
    assert sid in cli("archived", "ls").stdout
    assert sid in [s["id"] for s in json.loads(cli("archived", "ls", "--json").stdout)]


def test_pool_verbs(cli):
    pool_id = cli("pool", "create", "--warm", "1", "--max", "2", "-m", "1024").stdout.strip()
    try:
        info = json.loads(cli("pool", "describe", pool_id, "--json").stdout)
        assert info["warm_containers"] == 1 and info["max_containers"] == 2
        assert pool_id in cli("pool", "ls").stdout
        assert pool_id in [p["id"] for p in json.loads(cli("pool", "ls", "--json").stdout)]
        claimed = json.loads(cli("pool", "claim", pool_id, "--json").stdout)
        cli.tracker.add(claimed["id"])
        assert claimed["pool_id"] == pool_id and claimed["status"] == "running"
        busy = cli("pool", "rm", pool_id, check=False)
        assert busy.returncode == 1 and "in use" in busy.stderr
        cli("terminate", claimed["id"])
        updated = json.loads(cli("pool", "update", pool_id, "-m", "640", "--json").stdout)
        assert updated["resources"]["memory_mb"] == 640 and updated["warm_containers"] == 0
    finally:
        cli("pool", "rm", pool_id, check=False)
    assert cli("pool", "describe", pool_id, check=False).returncode == 1


def test_ls_suspended_and_archived(cli):
    import secrets

    name = f"ls-susp-{secrets.token_hex(3)}"
    named = cli.new(name)
    other = cli.new()
    cli("suspend", named)
    suspended = [s["id"] for s in json.loads(cli("ls", "-s", "--json").stdout)]
    assert named in suspended and other not in suspended
    cli("terminate", other)
    assert other in cli("ls", "-t", "-q").stdout.split() and other not in cli("ls", "-q").stdout.split()
    assert all(s["status"] in ("terminated", "failed") for s in json.loads(cli("ls", "--archived", "--json").stdout))
