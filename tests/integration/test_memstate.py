"""Memory state with real CRIU: suspend/resume cycles, snapshots, restore, clone."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest

from cellbox.manager.records import Status
from cellbox.manager.snapshot_store import SnapshotType

from ..leaks import leftovers

pytestmark = pytest.mark.root

# A user process with state only in memory: GET /inc adds one and returns the count.
# It also writes the count to /state/count, so files and memory can be compared.
COUNTER = r"""
import http.server, os
os.makedirs('/state', exist_ok=True)
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global n
        if self.path == '/inc':
            n += 1
            with open('/state/count', 'w') as f:
                f.write(str(n))
        body = str(n).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
"""


def start_counter(sandboxes, rec) -> None:
    with sandboxes.agent(rec) as agent:
        r = agent.post("/api/v1/processes", json={"command": "python3", "args": ["-c", COUNTER]})
        assert r.status_code == 201, r.text
    wait_counter(rec)


def wait_counter(rec, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"http://{rec.ip}:8080/", timeout=1)
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "counter server did not come up"
            time.sleep(0.05)


def inc(rec) -> int:
    return int(httpx.get(f"http://{rec.ip}:8080/inc", timeout=10).text)


def file_sums(sandboxes, rec) -> str:
    return sandboxes.sh(rec, "find /data -type f -exec sha256sum {} + | sort")["out"]


@pytest.fixture
def mem(manager):
    return manager.memory


def test_suspend_resume_twenty_cycles(sandboxes, manager, mem, loop_thread, settings):
    rec = sandboxes.create(name="cycles", memory_mb=512)
    start_counter(sandboxes, rec)
    sandboxes.sh(rec, "mkdir -p /data && head -c 5000000 /dev/urandom > /data/blob && echo hello > /data/small")
    sums = file_sums(sandboxes, rec)
    count = inc(rec)
    for cycle in range(20):
        susp = loop_thread.run(mem.suspend("cycles"))
        assert susp.status == Status.SUSPENDED
        # Suspended: no container, no cgroup, no RAM.
        assert leftovers(settings, {rec.id}).get("containers") is None
        assert not os.path.exists(f"/sys/fs/cgroup/memory/cellbox/{rec.id}")
        res = loop_thread.run(mem.resume("cycles"))
        assert res.status == Status.RUNNING
        wait_counter(res)
        value = inc(res)
        assert value == count + 1, f"cycle {cycle}: counter {value}, expected {count + 1}"
        count = value
        assert file_sums(sandboxes, res) == sums, f"cycle {cycle}: files changed"
        assert sandboxes.sh(res, "cat /state/count")["out"] == str(count)
    assert manager.get("cycles").extra["resume_count"] == 20


def test_suspend_only_named_and_idempotent(sandboxes, mem, loop_thread):
    eph = sandboxes.create()
    with pytest.raises(Exception) as err:
        loop_thread.run(mem.suspend(eph.id))
    assert getattr(err.value, "status", None) == 400
    named = sandboxes.create(name="twice")
    loop_thread.run(mem.suspend("twice"))
    assert loop_thread.run(mem.suspend("twice")).status == Status.SUSPENDED
    assert loop_thread.run(mem.resume("twice")).status == Status.RUNNING
    assert loop_thread.run(mem.resume("twice")).status == Status.RUNNING
    assert sandboxes.run(named, "true")["exit_code"] == 0


def test_destroy_while_suspended_cleans_up(sandboxes, mem, loop_thread, settings):
    rec = sandboxes.create(name="gone-suspended")
    loop_thread.run(mem.suspend(rec.id))
    sandboxes.destroy(rec)
    assert leftovers(settings, {rec.id}) == {}


def test_memory_snapshot_restored_three_times(sandboxes, manager, mem, loop_thread):
    src = sandboxes.create(memory_mb=512)
    start_counter(sandboxes, src)
    for _ in range(5):
        at_snapshot = inc(src)
    snap = loop_thread.run(mem.snapshot(src.id, snapshot_type=SnapshotType.MEMORY))
    assert snap.status.value == "completed"
    inc(src)  # the source goes on
    try:
        for _ in range(3):
            copy = loop_thread.run(mem.restore(snap.id))
            sandboxes.made.append(copy.id)
            assert copy.id != src.id and copy.ip != src.ip
            wait_counter(copy)
            assert inc(copy) == at_snapshot + 1
            # Files and memory are from the same instant.
            assert sandboxes.sh(copy, "cat /state/count")["out"] == str(at_snapshot + 1)
            assert sandboxes.run(copy, "hostname")["out"] == copy.id
    finally:
        loop_thread.run(mem.delete_snapshot(snap.id))
    assert mem.snapshots.get(snap.id) is None


def test_filesystem_snapshot_restores_files_only(sandboxes, mem, loop_thread):
    src = sandboxes.create()
    sandboxes.sh(src, "mkdir -p /data && echo kept > /data/f")
    snap = loop_thread.run(mem.snapshot(src.id, snapshot_type=SnapshotType.FILESYSTEM))
    sandboxes.sh(src, "echo changed > /data/f")
    try:
        copy = loop_thread.run(mem.restore(snap.id))
        sandboxes.made.append(copy.id)
        procs = sandboxes.agent(copy).get("/api/v1/processes").json()["processes"]
        assert procs == []  # a fresh boot, not the source's processes
        assert sandboxes.sh(copy, "cat /data/f")["out"] == "kept"
    finally:
        loop_thread.run(mem.delete_snapshot(snap.id))


def test_live_clone_diverges(sandboxes, mem, loop_thread):
    src = sandboxes.create(memory_mb=512)
    start_counter(sandboxes, src)
    base = inc(src)
    copies = loop_thread.run(mem.clone(src.id, 2))
    assert all(not isinstance(c, Exception) for c in copies), copies
    sandboxes.made.extend(c.id for c in copies)
    assert len({c.id for c in copies} | {src.id}) == 3
    assert len({c.ip for c in copies} | {src.ip}) == 3
    for c in copies:
        wait_counter(c)
    assert inc(src) == base + 1  # the source kept running
    a, b = copies
    assert inc(a) == base + 1
    assert inc(a) == base + 2
    assert inc(b) == base + 1  # b did not see a's increments


def test_follow_reattaches_after_resume(sandboxes, mem, loop_thread):
    rec = sandboxes.create(name="follower")
    agent = sandboxes.agent(rec)
    r = agent.post("/api/v1/processes", json={
        "command": "sh", "args": ["-c", "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo line$i; sleep 0.1; done"]})
    pid = r.json()["pid"]
    seen = []
    t0 = time.monotonic()
    with pytest.raises(httpx.HTTPError):
        with agent.stream("GET", f"/api/v1/processes/{pid}/output/follow", timeout=30) as s:
            for line in s.iter_lines():
                if line.startswith("data:") and "line" in line:
                    seen.append(json.loads(line[5:])["line"])
                    if len(seen) == 5:
                        loop_thread.run(mem.suspend("follower"))
    assert len(seen) >= 5
    assert time.monotonic() - t0 < 10, "the stream did not end promptly when the sandbox was suspended"
    res = loop_thread.run(mem.resume("follower"))
    lines = []
    with sandboxes.agent(res) as agent2:
        with agent2.stream("GET", f"/api/v1/processes/{pid}/output/follow") as s:
            for line in s.iter_lines():
                if line.startswith("data:") and "line" in line:
                    lines.append(json.loads(line[5:])["line"])
    assert lines == [f"line{i}" for i in range(1, 41)]


# A task waiting for its vfork child (the way glibc's posix_spawn and Python's
# subprocess start programs) sleeps in D state until the child execs. Frozen there, it
# cannot be seized: CRIU waits out its 10 s timeout and the dump fails ("Unseizable
# non-zombie ... state D", CI of 2026-12-02, a pre-booted image's build).
VFORK_C = r"""
#include <unistd.h>
int main(void) {
    for (;;) {
        pid_t pid = vfork();
        if (pid == 0) { usleep(SPAWN_US); _exit(0); }  /* a child slow to exec */
        usleep(3000);
    }
}
"""


def _vforker(tmp_path, spawn_us: int):
    import subprocess
    src = tmp_path / f"vforker-{spawn_us}.c"
    src.write_text(VFORK_C.replace("SPAWN_US", str(spawn_us)))
    binary = tmp_path / f"vforker-{spawn_us}"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(binary), str(src)], check=True)
    return binary.read_bytes()


def _start_vforker(sandboxes, settings, tmp_path, rec, spawn_us: int, before: str = "") -> None:
    """Put the helper into the sandbox and start it (its vfork child sleeps ``spawn_us``)."""
    from cellbox.storage import inroot, rootfs
    with inroot.Root(rootfs.path(settings.pool, rec.id)) as tree:  # the tenant's tree: resolved inside it
        tree.write_file("usr/local/bin/vforker", _vforker(tmp_path, spawn_us), mode=0o755)
    sandboxes.sh(rec, f"{before}setsid /usr/local/bin/vforker </dev/null >/dev/null 2>&1 &")
    time.sleep(0.3)


def test_memory_snapshot_of_a_task_in_vfork(sandboxes, mem, loop_thread, settings, tmp_path):
    """A memory snapshot taken while a task waits on a vfork child still succeeds."""
    rec = sandboxes.create(memory_mb=256)
    _start_vforker(sandboxes, settings, tmp_path, rec, 30_000)
    t0 = time.monotonic()
    snap = loop_thread.run(mem.snapshot(rec.id, snapshot_type=SnapshotType.MEMORY), timeout=120)
    took = time.monotonic() - t0
    try:
        assert snap.status.value == "completed"
        copy = loop_thread.run(mem.restore(snap.id))
        sandboxes.made.append(copy.id)
        assert "vforker" in sandboxes.sh(copy, "ps -eo comm")["out"]
    finally:
        loop_thread.run(mem.delete_snapshot(snap.id))
    print(f"snapshot took {took:.2f}s")


def test_suspend_of_a_task_in_vfork(sandboxes, mem, loop_thread, settings, tmp_path):
    """The same for a suspend (CRIU's own freeze, before this fix) and its resume."""
    rec = sandboxes.create(name="vforking", memory_mb=256)
    _start_vforker(sandboxes, settings, tmp_path, rec, 30_000)
    for _ in range(3):
        assert loop_thread.run(mem.suspend(rec.id), timeout=120).status == Status.SUSPENDED
        res = loop_thread.run(mem.resume(rec.id), timeout=120)
        assert res.status == Status.RUNNING
        assert "vforker" in sandboxes.sh(res, "ps -eo comm")["out"]


def test_a_vfork_that_never_execs_is_refused_clearly(sandboxes, mem, loop_thread, settings, tmp_path,
                                                     monkeypatch):
    """A hostile tenant can hold a task in vfork forever: the snapshot and the suspend
    are refused with a 409 naming it (after the freeze's bound, here shortened), and
    the sandbox runs on untouched."""
    from cellbox.errors import Conflict
    from cellbox.runtime import freezer
    monkeypatch.setattr(freezer, "TIMEOUT", 1.5)
    rec = sandboxes.create(name="vfork-forever", memory_mb=256)
    _start_vforker(sandboxes, settings, tmp_path, rec, 3_600_000_000, before="echo before > /tmp/f; ")
    with pytest.raises(Conflict) as err:
        loop_thread.run(mem.snapshot(rec.id, snapshot_type=SnapshotType.MEMORY), timeout=60)
    assert err.value.code == "FREEZE_TIMEOUT" and "vfork" in err.value.message
    assert "/" not in err.value.message  # no host path in what the client sees
    with pytest.raises(Conflict) as err:
        loop_thread.run(mem.suspend(rec.id), timeout=60)
    assert err.value.code == "SUSPEND_FAILED"
    cur = mem.get(rec.id)
    assert cur.status == Status.RUNNING
    assert sandboxes.sh(cur, "cat /tmp/f; ps -eo comm | grep -c vforker")["out"].split() == ["before", "2"]
    assert [s.status.value for s in mem.snapshots.list() if s.sandbox_id == rec.id] in ([], ["failed"])
