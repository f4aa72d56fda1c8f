"""The self-sizing warm pool (manager/warm_sizing.py plugged into warm.py) on real sandboxes:
demand grows it within its memory budget, and with no demand it gives the sandboxes back."""

from __future__ import annotations

import dataclasses
import time

import pytest

from cellbox.manager import warm
from cellbox.manager.records import Status
from cellbox.manager.sandboxes import CreateSpec, SandboxManager
from cellbox.manager.store import Store

pytestmark = pytest.mark.root


@pytest.fixture
def sized(settings, loop_thread, manager, monkeypatch):
    # Budget for 3 sandboxes of 32 MiB; a burst is forgotten 60 s after it (the test
    # moves the sizer's clock on instead of waiting); the pool checks its target every
    # 0.2 s instead of every 5 s.
    monkeypatch.setenv("CELLBOX_WARM_BUDGET_MB", "96")
    monkeypatch.setenv("CELLBOX_WARM_SANDBOX_MB", "32")
    monkeypatch.setenv("CELLBOX_WARM_MEMORY_S", "60")
    monkeypatch.setattr(warm, "RESIZE_EVERY", 0.2)
    monkeypatch.setattr(warm, "GROW_MAX_WAIT", 0.5)  # growth waits for idle CPUs: not here, on a shared host
    store = Store(settings.db_path)
    mgr = SandboxManager(dataclasses.replace(settings, warm_pool_size=1), store)
    loop_thread.run(mgr.start())
    made: list[str] = []
    try:
        yield mgr, made
    finally:
        for sid in made:
            loop_thread.run(mgr.destroy(sid))
        loop_thread.run(mgr.stop())
        store.close()


def _until(cond, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_pool_grows_with_demand_up_to_its_budget_then_shrinks_when_idle(sized, loop_thread):
    mgr, made = sized
    pool = mgr.warm
    assert pool is not None and pool.sizer is not None, "sizing is on by default"
    skew = [0.0]
    pool.sizer.clock = lambda: time.monotonic() + skew[0]
    _until(lambda: pool.ready == 1, "the pool did not reach its floor")
    for _ in range(6):  # 6 creates within seconds: 6 x 1.2 wanted, the budget holds 3
        made.append(loop_thread.run(mgr.create(CreateSpec())).id)
    assert pool.target() == 3
    _until(lambda: pool.ready == 3, "the pool did not grow to its budget")
    assert pool.ready + pool._building <= 3, "never more than the budget"
    kept = [r.id for r in pool._ready]
    skew[0] = 61.0  # a minute without demand
    _until(lambda: pool.target() == 1 and pool.ready == 1, "the idle pool did not shrink back", timeout=60)
    gone = [sid for sid in kept if sid not in {r.id for r in pool._ready}]
    assert len(gone) == 2
    for sid in gone:  # shrinking destroys the sandboxes, it does not just forget them
        _until(lambda sid=sid: mgr.store.get(sid).status == Status.TERMINATED, f"{sid} was not destroyed", timeout=30)
        assert not (mgr.settings.sandboxes_dir / sid).exists()


def test_autosize_off_keeps_the_fixed_size(settings, loop_thread, manager, monkeypatch):
    monkeypatch.setenv("CELLBOX_WARM_AUTOSIZE", "0")
    store = Store(settings.db_path)
    mgr = SandboxManager(dataclasses.replace(settings, warm_pool_size=1), store)
    loop_thread.run(mgr.start())
    try:
        assert mgr.warm is not None and mgr.warm.sizer is None and mgr.warm.target() == 1
    finally:
        loop_thread.run(mgr.stop())
        store.close()
