"""Logs with Tensorlake's filters and the log-processes route (issue 14 item 4), through
the real server. Before: ``level``/``body``/``nextToken`` were ignored, a string
``processId`` was a 400, ``…/processes`` was a 404, and a terminated sandbox had none."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cellbox.logs.keeper import LogKeeper
from cellbox.manager.service import LogLine

from .conftest import Api

pytestmark = pytest.mark.root

SCRIPT = "for i in $(seq 1 25); do echo line-$i; done; echo needle-A; echo needle-b >&2; exec sleep 600"


def logs(api: Api, sid: str, **params) -> dict:
    r = api.request("GET", f"/sandboxes/{sid}/logs", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def bodies(body: dict) -> list[str]:
    return [e["body"] for e in body["logs"]]


def test_filters_paging_and_processes(api: Api):
    sid = api.create({"entrypoint": ["/bin/sh", "-c", SCRIPT]})["sandbox_id"]
    deadline = time.monotonic() + 20
    while "needle-b" not in bodies(logs(api, sid)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert bodies(logs(api, sid, body="NEEDLE")) == ["needle-A", "needle-b"]  # case-insensitive substring
    # levels: stdout is info, stderr error (manager/log_levels.py)
    assert "needle-b" not in bodies(logs(api, sid, level=["info"])) and "needle-A" in bodies(logs(api, sid, level=["info"]))
    assert bodies(logs(api, sid, level=["error"])) == ["needle-b"] and logs(api, sid, level=["warn"])["logs"] == []
    assert [e["level"] for e in logs(api, sid, level=[3, 5], tail=2)["logs"]] == [3, 5]
    procs = api.request("GET", f"/sandboxes/{sid}/processes").json()["processes"]
    entry = next(p for p in procs if p["processCommand"] == "/bin/sh")
    assert entry["logCount"] == 27 and entry["firstSeen"] <= entry["lastSeen"]
    assert set(entry) == {"processId", "processPid", "processCommand", "processManagedId", "processManagedName",
                          "firstSeen", "lastSeen", "logCount"}
    mine = logs(api, sid, processId=entry["processId"])
    assert len(mine["logs"]) == 27 and logs(api, sid, processId="424242")["logs"] == []
    # Paging: head lines a page, nextToken until the end, every line exactly once.
    seen, token = [], None
    while True:
        page = logs(api, sid, processId=entry["processId"], head=10, **({"nextToken": token} if token else {}))
        seen += bodies(page)
        token = page["nextToken"]
        if token is None:
            break
    assert seen == bodies(mine)
    assert bodies(logs(api, sid, tail=2)) == ["needle-A", "needle-b"]
    # Hostile input: clear 400s.
    for params in ({"level": "loud"}, {"nextToken": "x"}, {"head": -1}, {"body": "x" * 5000}):
        r = api.request("GET", f"/sandboxes/{sid}/logs", params=params)
        assert r.status_code == 400, (params, r.text)
    # Kept after the sandbox ends; another project sees nothing.
    api.delete(sid)
    assert bodies(logs(api, sid, body="needle")) == ["needle-A", "needle-b"]
    other = api.in_namespace("default-other-ns-logs")
    assert other.request("GET", f"/sandboxes/{sid}/logs").status_code == 404


def test_keeper_rotates_at_its_cap(tmp_path: Path):
    keeper = LogKeeper(tmp_path, max_bytes=2000)
    sid = "k" * 21
    keeper.append(sid, [LogLine(i, f"line {i:04d} " + "x" * 50, 7, "cmd") for i in range(200)])
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / sid).iterdir()} == {0o600}  # output may hold secrets
    files = sorted(p.name for p in (tmp_path / sid).iterdir())
    assert files == ["current.jsonl", "previous.jsonl"]
    assert sum(p.stat().st_size for p in (tmp_path / sid).iterdir()) <= 4000  # at most twice the cap
    kept = keeper.read(sid)
    assert kept and kept[-1].body.startswith("line 0199") and kept[0].timestamp > 0  # newest kept, oldest dropped
    (tmp_path / sid / "current.jsonl").write_text('not json\n{"t": "x"}\n')  # a damaged file: skipped lines
    assert all(isinstance(line, LogLine) for line in keeper.read(sid))
    with pytest.raises(ValueError):
        keeper.append("../../etc", [])


def test_logs_readable_while_suspended_and_after_ending_asleep(api: Api):
    import secrets

    name = f"logs-sleep-{secrets.token_hex(3)}"
    sid = api.create({"name": name, "entrypoint": ["/bin/sh", "-c", "echo before-sleep; exec sleep 600"]})["sandbox_id"]
    deadline = time.monotonic() + 20
    while "before-sleep" not in bodies(logs(api, sid)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert api.request("POST", f"/sandboxes/{sid}/suspend", params={"wait_ms": 60000}).status_code == 200
    assert bodies(logs(api, sid, body="before")) == ["before-sleep"]  # was empty while suspended
    # Resumed and suspended again: the copy is replaced, never doubled.
    assert api.request("POST", f"/sandboxes/{sid}/resume", params={"wait_ms": 60000}).status_code == 200
    assert api.request("POST", f"/sandboxes/{sid}/suspend", params={"wait_ms": 60000}).status_code == 200
    assert bodies(logs(api, sid, body="before")) == ["before-sleep"]
    api.delete(sid)  # ends asleep: the suspend-time copy is what is kept
    assert bodies(logs(api, sid, body="before")) == ["before-sleep"]


def test_keeper_snapshot_replaces(tmp_path: Path):
    keeper = LogKeeper(tmp_path, max_bytes=300)
    sid = "s" * 21
    keeper.snapshot(sid, [LogLine(1, "a", 1, "c")])
    keeper.snapshot(sid, [LogLine(1, "a", 1, "c"), LogLine(2, "b", 1, "c")])
    assert [ln.body for ln in keeper.read(sid)] == ["a", "b"]
    keeper.snapshot(sid, [LogLine(i, f"line-{i}", 1, "c") for i in range(50)])  # over the cap: the newest kept
    kept = keeper.read(sid)
    assert kept[-1].body == "line-49" and len(kept) < 50
