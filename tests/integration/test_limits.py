"""Resource limits hold: CPU quota, memory (OOM reported), disk quota, pids."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.root

BUSY = "import time,os\nt=time.time()\nwhile time.time()-t<{secs}: pass\nprint(os.times().user+os.times().system)"


def test_half_a_cpu_gets_about_half_a_core(sandboxes):
    rec = sandboxes.create(cpus=0.5, memory_mb=256)
    res = sandboxes.run(rec, "python3", "-c", BUSY.format(secs=3), timeout=30)
    assert res["exit_code"] == 0, res
    cpu_seconds = float(res["out"])
    # 3 s of wall time at a 50 % quota is about 1.5 s of CPU; allow scheduler noise.
    assert 1.1 <= cpu_seconds <= 1.9, f"busy loop got {cpu_seconds:.2f}s of CPU in 3s wall at cpus=0.5"


def test_memory_hog_is_oom_killed_and_reported(sandboxes):
    rec = sandboxes.create(cpus=1, memory_mb=128)
    res = sandboxes.run(rec, "python3", "-c", "b=[]\nwhile True: b.append(bytearray(8<<20))", timeout=60)
    assert res.get("reason") == "oom_killed", res
    assert res.get("oom_killed") is True
    # The sandbox itself survives its process's OOM kill.
    assert sandboxes.run(rec, "true")["exit_code"] == 0


def test_disk_filler_stops_at_disk_mb(sandboxes):
    rec = sandboxes.create(disk_mb=600)
    writable = 600 - rec.extra["image_mb"]
    res = sandboxes.sh(rec, "dd if=/dev/zero of=/fill bs=1M count=2000 2>&1; sync; du -m /fill | cut -f1", timeout=120)
    assert "Disk quota exceeded" in res["out"] or "No space left" in res["out"], res["out"]
    written = int(res["out"].splitlines()[-1])
    assert writable - 40 <= written <= writable + 8, f"wrote {written} MiB with {writable} MiB writable"
    # Once the file is gone the sandbox can write again.
    assert sandboxes.sh(rec, "rm /fill && echo ok > /after && cat /after")["out"] == "ok"


def test_fork_bomb_is_contained_by_pids_limit(sandboxes):
    rec = sandboxes.create(cpus=0.5, memory_mb=512, pids_limit=128)
    bomb = sandboxes.agent(rec)
    r = bomb.post("/api/v1/processes", json={"command": "/bin/bash", "args": ["-c", "f(){ f|f& }; f"]})
    assert r.status_code == 201, r.text
    time.sleep(3)
    # The host stays responsive while the bomb runs.
    t0 = time.monotonic()
    subprocess.run(["true"], check=True)
    assert time.monotonic() - t0 < 1.0
    pids = int(open(f"/sys/fs/cgroup/pids/cellbox/{rec.id}/pids.current").read())
    assert pids <= 128
    bomb.close()
    # And the sandbox is torn down cleanly with the bomb still running.
    sandboxes.destroy(rec)
