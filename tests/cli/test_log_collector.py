"""Log levels and the continuous collector through a live server (issue 14): stderr and
level words select by ``--level``; a sandbox killed from outside (its init SIGKILLed,
as an OOM kill or a crash would) keeps its processes' output; a flood stays within the
cap and a huge line is cut, in the sandbox's own log files only."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from cellbox.config import load
from cellbox.logs.keeper import DEFAULT_MAX_BYTES

pytestmark = pytest.mark.root


def _until(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def _bodies(cli, sid: str, *args: str) -> list[str]:
    return [e["body"] for e in json.loads(cli("logs", sid, "--json", *args).stdout)]


def test_levels_select_stderr_and_level_words(cli, sandbox_id):
    sid = sandbox_id
    cli("exec", sid, "sh", "-c", "echo plain-out; echo plain-err >&2; echo 'WARNING:root:careful' >&2; "
        "echo 'DEBUG tick'; echo 'level=fatal msg=gone'")
    assert _bodies(cli, sid, "--level", "error") == ["plain-err"]
    assert _bodies(cli, sid, "--level", "warn") == ["WARNING:root:careful"]
    assert _bodies(cli, sid, "--level", "debug") == ["DEBUG tick"]
    assert _bodies(cli, sid, "--level", "fatal") == ["level=fatal msg=gone"]
    assert _bodies(cli, sid, "--level", "4", "--level", "5") == ["plain-err", "WARNING:root:careful"]
    entries = json.loads(cli("logs", sid, "--json", "--grep", "plain").stdout)
    assert [(e["body"], e["level"]) for e in entries] == [("plain-out", 3), ("plain-err", 5)]


def test_a_killed_sandbox_keeps_its_output(cli, sandbox_id):
    sid = sandbox_id
    settings = load()
    cli("exec", "--detach", sid, "sh", "-c", "echo crash-needle-out; echo crash-needle-err >&2; exec sleep 600")
    kept = settings.data_dir / "logs" / sid / "current.jsonl"
    _until(lambda: kept.exists() and "crash-needle-err" in kept.read_text(), what="the collector")
    init_pid = int((settings.sandboxes_dir / sid / "init.pid").read_text())
    os.kill(init_pid, signal.SIGKILL)  # from outside: no delete, no hook of the server's
    _until(lambda: json.loads(cli("describe", sid, "--json").stdout)["status"] != "running", what="the sweep")
    entries = json.loads(cli("logs", sid, "--json", "--grep", "crash-needle").stdout)
    assert [(e["body"], e["level"]) for e in entries] == [("crash-needle-out", 3), ("crash-needle-err", 5)]
    _until(lambda: not (settings.sandboxes_dir / sid).exists(), what="its teardown")  # nothing of it left


def test_flood_and_huge_line_stay_within_the_cap(cli, sandbox_id):
    sid = sandbox_id
    settings = load()
    # 3 MB without a newline, then ~24 MB of lines: more than the cap (8 MiB) three times over
    cli("exec", "-t", "120", sid, "sh", "-c",
        "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo after-the-huge-line; "
        "yes 0123456789012345678901234567890123456789012345678901234567890123 | head -c 24000000; "
        "echo flood-done", timeout=240)
    d = settings.data_dir / "logs" / sid
    _until(lambda: (d / "current.jsonl").exists() and "flood-done" in (d / "current.jsonl").read_text()[-4096:],
           timeout=90, what="the flood to be collected")
    cap = DEFAULT_MAX_BYTES
    names = sorted(p.name for p in d.iterdir())
    if "previous.jsonl" not in names:
        # Under load the collector can fall behind the flood: the agent's journal then
        # drops what it could not hold, less than the cap reaches the host, and nothing
        # rotates. That gap must be said, as one line (CI of 2026-12-02, load ~3).
        assert "lines were dropped before they were collected" in (d / "current.jsonl").read_text(), names
    assert set(names) - {"previous.jsonl"} == {".collector.lock", "current.jsonl"}, names
    for p in d.glob("*.jsonl"):
        assert p.stat().st_size <= cap and oct(p.stat().st_mode & 0o777) == "0o600"
        for raw in p.read_text().splitlines():
            assert len(raw) <= cap // 8 and isinstance(json.loads(raw)["b"], str)
    assert len(list((settings.data_dir / "logs").glob(f"{sid}*"))) == 1


def test_suspend_resume_delete_keep_each_line_once(cli):
    import secrets

    sid = cli.new(f"logs-once-{secrets.token_hex(3)}")
    cli("exec", sid, "sh", "-c", "echo once-before")
    kept = load().data_dir / "logs" / sid / "current.jsonl"
    _until(lambda: kept.exists() and "once-before" in kept.read_text(), what="the collector")
    cli("suspend", sid)
    assert _bodies(cli, sid, "--grep", "once-") == ["once-before"]  # read from the host while it sleeps
    cli("resume", sid)
    cli("exec", sid, "sh", "-c", "echo once-after")
    cli("terminate", sid)  # at once: the last lines come from the final drain
    assert _bodies(cli, sid, "--grep", "once-") == ["once-before", "once-after"]
