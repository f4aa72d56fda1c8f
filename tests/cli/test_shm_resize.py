"""/dev/shm follows memory_mb through a live resize (issue 14): sized at boot from
memory_mb (``bundle.shm_kib``), grown and shrunk in place from the host, refused
(changing nothing) when it holds more than its new size, and kept across a
suspend/resume. The tenant itself cannot resize it (no CAP_SYS_ADMIN)."""

from __future__ import annotations

import json
import secrets

import pytest

from cellbox.runtime.bundle import shm_kib

pytestmark = pytest.mark.root


def _shm_kib(cli, sid: str) -> int:
    out = cli("exec", sid, "sh", "-c", "df -k /dev/shm | tail -1").stdout.split()
    return int(out[1])


def _resize(cli, sid: str, memory_mb: int, check: bool = True):
    return cli("resize", sid, "-m", str(memory_mb), "--json", check=check)


def test_shm_follows_memory(cli):
    sid = cli.new("-m", "512")
    assert _shm_kib(cli, sid) == shm_kib(512) == 65536
    _resize(cli, sid, 128)
    assert _shm_kib(cli, sid) == shm_kib(128) == 32768
    _resize(cli, sid, 200)
    assert _shm_kib(cli, sid) == shm_kib(200) == 51200
    _resize(cli, sid, 2048)
    assert _shm_kib(cli, sid) == 65536  # Docker's 64 MiB is the most


def test_shm_shrink_below_use_is_refused_and_changes_nothing(cli):
    sid = cli.new("-m", "512")
    cli("exec", sid, "sh", "-c", "head -c 40000000 /dev/zero > /dev/shm/fill")
    refused = _resize(cli, sid, 128, check=False)  # 32 MiB of /dev/shm cannot hold 40 MB
    assert refused.returncode == 1 and "/dev/shm" in refused.stderr
    info = json.loads(cli("describe", sid, "--json").stdout)
    assert info["resources"]["memory_mb"] == 512
    assert _shm_kib(cli, sid) == 65536
    cli("exec", sid, "rm", "/dev/shm/fill")
    _resize(cli, sid, 128)
    assert _shm_kib(cli, sid) == 32768


def test_tenant_cannot_remount_shm_and_resize_survives_suspend(cli):
    sid = cli.new(f"shm-{secrets.token_hex(3)}", "-m", "512")
    tried = cli("exec", sid, "sh", "-c", "mount -o remount,size=400m /dev/shm", check=False)
    assert tried.returncode != 0 and _shm_kib(cli, sid) == 65536
    _resize(cli, sid, 160)
    cli("suspend", sid)
    cli("resume", sid)
    assert _shm_kib(cli, sid) == shm_kib(160) == 40960
    assert json.loads(cli("describe", sid, "--json").stdout)["resources"]["memory_mb"] == 160
