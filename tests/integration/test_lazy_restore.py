"""Lazy restores into a new identity (runtime/lazy_restore.py): restore of a memory
snapshot and clones answer before their memory is in; the memory arrives intact, the
processes keep counting, and a failure leaves no daemon and no image links behind."""

from __future__ import annotations

import time

import httpx
import pytest

from cellbox import faults
from cellbox.manager.snapshot_store import SnapshotType
from cellbox.manager.snapshots import CLONE_TMPFS
from cellbox.runtime import checkpoint

from ..leaks import leftovers

pytestmark = pytest.mark.root

# 48 MiB of pseudo-random bytes (fixed seed) in memory, and a counter: GET /sum is the
# buffer's SHA-256 as computed at start, GET /now recomputes it, GET /inc counts.
HOLDER = r"""
import hashlib, http.server, random
random.seed(7)
buf = bytearray(random.randbytes(48 << 20))
first = hashlib.sha256(buf).hexdigest()
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global n
        if self.path == '/inc':
            n += 1
            body = str(n)
        elif self.path == '/now':
            body = hashlib.sha256(buf).hexdigest()
        else:
            body = first
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *a): pass
http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()
"""


def get(rec, path: str) -> str:
    return httpx.get(f"http://{rec.ip}:8080{path}", timeout=30).text


def start_holder(sandboxes, rec) -> str:
    with sandboxes.agent(rec) as agent:
        assert agent.post("/api/v1/processes", json={"command": "python3", "args": ["-c", HOLDER]}).status_code == 201
    for _ in range(600):
        try:
            return get(rec, "/sum")
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("holder did not come up")


def lazy_daemons_of(path_part: str) -> list[int]:
    """criu lazy-pages daemons whose arguments name ``path_part``."""
    return [pid for pid, argv in checkpoint.lazy_daemon_procs() if any(path_part.encode() in a for a in argv)]


@pytest.fixture
def mem(manager):
    return manager.memory


@pytest.fixture
def lazy(monkeypatch):
    monkeypatch.setenv("CELLBOX_LAZY_RESTORE", "1")


def test_lazy_restore_memory_intact_and_counting(sandboxes, manager, mem, loop_thread, settings, lazy):
    src = sandboxes.create(memory_mb=512)
    digest = start_holder(sandboxes, src)
    for _ in range(3):
        at = int(get(src, "/inc"))
    snap = loop_thread.run(mem.snapshot(src.id, snapshot_type=SnapshotType.MEMORY))
    try:
        copy = loop_thread.run(mem.restore(snap.id))
        sandboxes.made.append(copy.id)
        # It answers while (or after) its pages stream in; either way they are the source's.
        assert get(copy, "/inc") == str(at + 1)
        assert get(copy, "/now") == digest
        # Once the stream ends, its daemon and its private image links are gone.
        loop_thread.run(mem.settle())
        assert not lazy_daemons_of(str(mem.snapshot_dir(snap.id)))
        assert not list(mem.snapshot_dir(snap.id).glob("mem.*")), "the restore's image links were left"
        assert not (settings.sandboxes_dir / copy.id / "restore").exists()
        assert get(copy, "/inc") == str(at + 2)
    finally:
        loop_thread.run(mem.delete_snapshot(snap.id))


def test_snapshot_of_a_streaming_clone_waits_for_its_pages(sandboxes, manager, mem, loop_thread, lazy):
    src = sandboxes.create(memory_mb=512)
    digest = start_holder(sandboxes, src)
    base = int(get(src, "/inc"))
    (copy,) = loop_thread.run(mem.clone(src.id, 1))
    assert not isinstance(copy, Exception), copy
    sandboxes.made.append(copy.id)
    # No settle: the snapshot must wait for the tail itself (runtime.settled).
    snap = loop_thread.run(mem.snapshot(copy.id, snapshot_type=SnapshotType.MEMORY))
    try:
        assert get(copy, "/inc") == str(base + 1)
        again = loop_thread.run(mem.restore(snap.id))
        sandboxes.made.append(again.id)
        assert get(again, "/now") == digest
        assert get(again, "/inc") == str(base + 1)  # from the snapshot's instant, not the copy's now
        assert get(src, "/inc") == str(base + 1)  # the source went its own way
    finally:
        loop_thread.run(mem.delete_snapshot(snap.id))


@pytest.mark.parametrize("point", ["restore.after_lazy_pages", "clone.after_restore"])
def test_failed_lazy_clone_leaves_nothing(sandboxes, manager, mem, loop_thread, settings, lazy, monkeypatch, point):
    src = sandboxes.create(memory_mb=512)
    start_holder(sandboxes, src)
    monkeypatch.setattr(faults, "_ARMED", (point, "fail"))
    copies = loop_thread.run(mem.clone(src.id, 2))
    monkeypatch.setattr(faults, "_ARMED", None)
    assert copies and all(isinstance(c, Exception) for c in copies), copies
    loop_thread.run(mem.settle())
    tag = src.id
    assert not lazy_daemons_of(str(CLONE_TMPFS)), "a lazy-pages daemon outlived its failed clone"
    if CLONE_TMPFS.is_dir():
        assert not [p for p in CLONE_TMPFS.iterdir() if tag in p.name], "clone scratch left on tmpfs"
    failed = [r for r in manager.store.list() if r.extra.get("restored_from") == src.id]
    assert failed, "the failed clones left no records to check"
    assert leftovers(settings, {r.id for r in failed}) == {}
    # The source is untouched and still clones once the fault is gone.
    (ok,) = loop_thread.run(mem.clone(src.id, 1))
    assert not isinstance(ok, Exception), ok
    sandboxes.made.append(ok.id)
    assert get(ok, "/inc") == "1"
