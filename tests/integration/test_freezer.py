"""runtime/freezer.py on a real sandbox: what runc pause/resume did, without runc."""

from __future__ import annotations

import httpx
import pytest

from cellbox import ids
from cellbox.runtime import freezer

pytestmark = pytest.mark.root


def test_freeze_stops_every_task_and_runc_sees_it_paused(sandboxes, manager, loop_thread):
    rec = sandboxes.create()
    cg = ids.cgroup_path(rec.id)
    assert freezer.available(cg)
    took = loop_thread.run(freezer.freeze(cg))
    try:
        assert freezer.is_frozen(cg) and took < freezer.TIMEOUT
        state = loop_thread.run(manager.runc.state(ids.container(rec.id)))
        assert state is not None and state.status == "paused"  # runc reads the freezer back
        with pytest.raises(httpx.TimeoutException):  # the agent is frozen too: no answer
            httpx.get(f"http://{rec.ip}:9501/api/v1/health", timeout=1.0)
    finally:
        freezer.thaw(cg)
    assert not freezer.is_frozen(cg)
    assert sandboxes.run(rec, "true")["exit_code"] == 0


def test_a_missing_cgroup_is_not_available_and_thaw_is_harmless():
    cg = ids.cgroup_path("0" * 21)
    assert not freezer.available(cg)
    freezer.thaw(cg)  # a sandbox already gone: nothing to do, no error
