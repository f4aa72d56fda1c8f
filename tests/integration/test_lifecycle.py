"""Create, use and destroy a sandbox; everything it made must be gone afterwards."""

from __future__ import annotations

import pytest

from cellbox.errors import InvalidRequest, NotFound
from cellbox.manager.records import Status

from ..leaks import leftovers

pytestmark = pytest.mark.root


def test_create_run_destroy(sandboxes, settings):
    rec = sandboxes.create(cpus=1.0, memory_mb=512)
    assert rec.status == Status.RUNNING
    with sandboxes.agent(rec) as agent:
        assert agent.get("/api/v1/health").json() == {"healthy": True}
    res = sandboxes.run(rec, "hostname")
    assert res["exit_code"] == 0 and res["out"] == rec.id
    res = sandboxes.sh(rec, "echo out; echo err >&2; exit 3")
    assert (res["out"], res["err"], res["exit_code"]) == ("out", "err", 3)
    # The default image has what the brief promises.
    res = sandboxes.sh(rec, "node -v && python3 -V && sqlite3 -version && git --version && curl -V | head -1 && ip -V")
    assert res["exit_code"] == 0, res
    assert res["out"].startswith("v18"), res["out"]

    done = sandboxes.destroy(rec)
    assert done.status == Status.TERMINATED
    assert leftovers(settings, {rec.id}) == {}


def test_files_round_trip(sandboxes):
    rec = sandboxes.create()
    with sandboxes.agent(rec) as agent:
        r = agent.put("/api/v1/files", params={"path": "/work/dir/hello.txt"}, content=b"hi there")
        assert r.status_code == 204, r.text
        assert agent.get("/api/v1/files", params={"path": "/work/dir/hello.txt"}).content == b"hi there"
        names = [e["name"] for e in agent.get("/api/v1/files/list", params={"path": "/work/dir"}).json()["entries"]]
        assert names == ["hello.txt"]
        assert agent.delete("/api/v1/files", params={"path": "/work/dir/hello.txt"}).status_code == 204
        assert agent.get("/api/v1/files", params={"path": "/work/dir/hello.txt"}).status_code == 404
    assert sandboxes.sh(rec, "cat /etc/hostname")["out"] == rec.id


def test_named_sandbox_found_by_name_and_unique(sandboxes, manager):
    rec = sandboxes.create(name="lifecycle-named")
    assert manager.get("lifecycle-named").id == rec.id
    with pytest.raises(Exception) as err:
        sandboxes.create(name="lifecycle-named")
    assert getattr(err.value, "status", None) == 409


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"cpus": 0}, "cpus"),
        ({"cpus": 64}, "cpus"),
        ({"memory_mb": 1}, "memory_mb"),
        ({"disk_mb": 10}, "disk_mb"),
        ({"name": "Bad Name"}, "name"),
        ({"pids_limit": 1}, "pids_limit"),
    ],
)
def test_bad_specs_rejected_before_anything_is_made(sandboxes, settings, kwargs, words):
    before = leftovers(settings, orphans_only=True)
    with pytest.raises(InvalidRequest) as err:
        sandboxes.create(**kwargs)
    assert words in str(err.value)
    assert leftovers(settings, orphans_only=True) == before


def test_unknown_image_is_not_found(sandboxes):
    with pytest.raises(NotFound):
        sandboxes.create(image="no/such-image")


def test_failed_start_cleans_up(sandboxes, manager, settings, monkeypatch):
    """A failure half-way through create leaves nothing behind and a failed record."""
    from cellbox.runtime import runc as runc_mod

    async def broken(self, *args, **kwargs):
        raise runc_mod.CommandFailed(["runc", "run"], 1, "injected failure")

    monkeypatch.setattr(runc_mod.Runc, "run_detached", broken)
    before = leftovers(settings, orphans_only=True)
    with pytest.raises(runc_mod.CommandFailed):
        sandboxes.create()
    assert leftovers(settings, orphans_only=True) == before
    failed = [r for r in manager.store.list() if r.status == Status.FAILED and "injected" in (r.error or "")]
    assert failed, "the failed create left no failed record"
