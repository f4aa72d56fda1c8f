"""``cellbox fs`` against a live server (subprocesses): every verb, human and --json."""

from __future__ import annotations

import json
import secrets

import pytest

pytestmark = pytest.mark.root


def test_fs_verbs(cli):
    name = f"clivol-{secrets.token_hex(3)}"
    fork = f"{name}-f"
    assert cli("fs", "create", name, "--size-mb", "32").stdout.strip() == name
    try:
        listed = json.loads(cli("fs", "ls", "--json").stdout)
        assert [v["size_mb"] for v in listed if v["name"] == name] == [32]
        assert name in cli("fs", "ls").stdout
        sid = cli.new()
        mounts = json.loads(cli("fs", "attach", sid, "--id", name, "-p", "/data", "--json").stdout)
        assert mounts == [{"file_system_id": name, "mount_path": "/data", "read_only": False}]
        assert cli("exec", sid, "--", "sh", "-c", "echo hi > /data/f").returncode == 0
        assert "/data" in cli("fs", "ls", sid).stdout
        ver = cli("fs", "snapshot", name, "-m", "first").stdout.strip()
        assert [v["snapshot_id"] for v in json.loads(cli("fs", "snapshots", name, "--json").stdout)] == [ver]
        assert json.loads(cli("fs", "fork", name, fork, "--snapshot", ver, "--json").stdout)["name"] == fork
        # Mounted: rm is refused (exit 1, the reason on stderr); a second writer too.
        refused = cli("fs", "rm", name, check=False)
        assert refused.returncode == 1 and "mounted" in refused.stderr, (refused, cli.server.log_tail())
        other = cli.new()
        second = cli("fs", "attach", other, "--id", name, "-p", "/w", check=False)
        assert second.returncode != 0 and sid in second.stderr
        ro = json.loads(cli("fs", "attach", other, "--id", name, "-p", "/v", "--snapshot", ver, "--json").stdout)
        assert ro == [{"file_system_id": name, "mount_path": "/v", "read_only": True, "snapshot_id": ver}]
        assert json.loads(cli("fs", "detach", sid, "-p", "/data", "--json").stdout) == []
        bad = cli("fs", "attach", sid, "--id", name, "-p", "/proc/x", check=False)
        assert bad.returncode != 0 and "reserved" in bad.stderr
        cli("terminate", other)
    finally:
        cli("fs", "rm", fork, check=False)
        cli("fs", "rm", name, check=False)
    assert json.loads(cli("fs", "rm", name, "--json").stdout) == {"deleted": [name]}
    assert name not in cli("fs", "ls").stdout
