"""The warm pool hands out pre-booted sandboxes shaped to the request, and refills."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time

import pytest

from cellbox.manager.records import Status
from cellbox.manager.sandboxes import CreateSpec, SandboxManager
from cellbox.manager.store import Store

from ..leaks import leftovers

pytestmark = pytest.mark.root


@pytest.fixture
def pooled(settings, loop_thread, manager):
    store = Store(settings.db_path)
    mgr = SandboxManager(dataclasses.replace(settings, warm_pool_size=2), store)
    loop_thread.run(mgr.start())
    made: list[str] = []
    try:
        yield mgr, made
    finally:
        for sid in made:
            loop_thread.run(mgr.destroy(sid))
        loop_thread.run(mgr.stop())
        store.close()


def _wait_ready(mgr, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while mgr.warm.ready < n:
        assert time.monotonic() < deadline, "warm pool did not fill"
        time.sleep(0.05)


def test_claim_applies_limits_and_refills(pooled, loop_thread, sandboxes, settings):
    mgr, made = pooled
    _wait_ready(mgr, 2)
    waiting = mgr.warm._ready[-1].id  # built at the lowest CPU weight until claimed
    assert open(f"/sys/fs/cgroup/cpu/cellbox/{waiting}/cpu.shares").read().strip() == "2"
    rec = loop_thread.run(mgr.create(CreateSpec(cpus=0.5, memory_mb=256, disk_mb=2000, pids_limit=300,
                                                name="warm-one")))
    made.append(rec.id)
    assert rec.extra.get("warm") is True and rec.status == Status.RUNNING
    assert mgr.get("warm-one").id == rec.id
    cg = "/sys/fs/cgroup"
    assert open(f"{cg}/cpu/cellbox/{rec.id}/cpu.cfs_quota_us").read().strip() == "50000"
    assert int(open(f"{cg}/memory/cellbox/{rec.id}/memory.limit_in_bytes").read()) == 256 << 20
    assert int(open(f"{cg}/memory/cellbox/{rec.id}/memory.memsw.limit_in_bytes").read()) == 256 << 20
    assert open(f"{cg}/pids/cellbox/{rec.id}/pids.max").read().strip() == "300"
    assert open(f"{cg}/cpu/cellbox/{rec.id}/cpu.shares").read().strip() == "1024"  # built at 2
    # resume/clone/restore start from the bundle: it must carry the claimed limits too
    res_cfg = json.loads((settings.sandboxes_dir / rec.id / "config.json").read_text())["linux"]["resources"]
    assert res_cfg["memory"] == {"limit": 256 << 20, "swap": 256 << 20}
    assert res_cfg["cpu"]["quota"] == 50000 and res_cfg["pids"] == {"limit": 300}
    # the disk quota, as btrfs-progs reads it back
    show = subprocess.run(["btrfs", "qgroup", "show", "-re", "--raw", str(settings.pool / "sandboxes" / rec.id)],
                          capture_output=True, text=True, check=True).stdout
    row = next(line.split() for line in show.splitlines() if line.endswith(f"sandboxes/{rec.id}"))
    assert int(row[3]) == (2000 - rec.extra["image_mb"]) << 20, show
    res = sandboxes.run(rec, "hostname")  # the agent answers, hostname = ID
    assert res["out"] == rec.id
    _wait_ready(mgr, 2)  # refilled in the background


def test_pool_is_torn_down_on_stop(settings, loop_thread, manager):
    store = Store(settings.db_path)
    mgr = SandboxManager(dataclasses.replace(settings, warm_pool_size=2), store)
    loop_thread.run(mgr.start())
    _wait_ready(mgr, 2)
    from cellbox.manager.owner import this_process

    # Only this manager's pool (other servers on this host keep pools of their own).
    warm_ids = {r.id for r in store.list("__warm__", live_only=True) if r.owner == this_process()}
    assert len(warm_ids) >= 2
    loop_thread.run(mgr.stop())
    store.close()
    assert leftovers(settings, warm_ids) == {}


def test_claim_can_raise_memory_above_the_pools(pooled, loop_thread, settings):
    """memory <= memory+swap must hold after every cgroup write: raising both above the
    pool's 1 GiB writes the swap limit first (the other order fails with EINVAL, and the
    claim would quietly fall back to a cold create)."""
    mgr, made = pooled
    _wait_ready(mgr, 1)
    rec = loop_thread.run(mgr.create(CreateSpec(cpus=1.0, memory_mb=3072)))
    made.append(rec.id)
    assert rec.extra.get("warm") is True
    cg = f"/sys/fs/cgroup/memory/cellbox/{rec.id}"
    assert int(open(f"{cg}/memory.limit_in_bytes").read()) == 3072 << 20
    assert int(open(f"{cg}/memory.memsw.limit_in_bytes").read()) == 3072 << 20
