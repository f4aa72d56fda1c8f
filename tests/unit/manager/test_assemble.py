"""The parts table without root: create makes every part in order, a failure at any
part removes every part made so far (and only then finalises the record, failed),
teardown removes them all in reverse and reports every error, not just the first."""

from __future__ import annotations

import asyncio

import pytest

from cellbox import ids
from cellbox.errors import CommandFailed, InternalFailure, LimitExceeded, NameTaken
from cellbox.manager.assemble import TeardownFailed
from cellbox.manager.records import SandboxRecord, Status
from cellbox.manager.sources import RestoreSource
from cellbox.network.policy import parse

from .fakes import failure

# The calls that make each part (fakes.py), in table order.
MAKES = ["create_rootfs", "create_netns", "apply_egress", "run", "wait_ready"]


def _rec(name: str | None = None) -> SandboxRecord:
    return SandboxRecord(id=ids.new_id(), namespace="default", name=name, image="cellbox/debian:latest",
                         cpus=1.0, memory_mb=512, disk_mb=1024, pids_limit=256, extra={"image_mb": 100})


def run(coro):  # one loop per call: the fakes hold no loop state
    return asyncio.run(coro)


def test_create_makes_every_part_in_table_order(node) -> None:
    rec = run(node.assembler.assemble(_rec(), node.boot_source(), policy=parse(deny_out=["10.0.0.0/8"])))
    assert [c for c in node.world.calls if c in MAKES] == MAKES
    assert [p.name for p in node.assembler.parts] == ["address", "rootfs", "netns", "egress", "bundle", "container"]
    assert rec.status == Status.RUNNING and rec.init_pid
    stored = node.store.get(rec.id)
    assert stored is not None and stored.status == Status.RUNNING and stored.ip == rec.ip
    assert node.world.alive() == {k: {rec.id} for k in ("rootfs", "netns", "egress")} | {
        "container": {ids.container(rec.id)}}
    cfg = (node.settings.sandboxes_dir / rec.id / "config.json").read_text()
    assert rec.id in cfg  # the bundle names the sandbox (hostname, cgroup)
    assert node.agent.keys == [bytes.fromhex(rec.extra["agent_key"])]  # the agent proves the new key


@pytest.mark.parametrize("failing", MAKES)
def test_failure_at_each_part_removes_everything_made(node, failing) -> None:
    """The undo: nothing of the sandbox is left, the record is failed with the reason."""
    node.world.fail_on[failing] = failure(failing)
    rec = _rec()
    with pytest.raises(CommandFailed):
        run(node.assembler.assemble(rec, node.boot_source(), policy=parse(deny_out=["10.0.0.0/8"])))
    assert node.world.alive() == {}, f"a failure at {failing} left parts behind"
    assert not (node.settings.sandboxes_dir / rec.id).exists()
    stored = node.store.get(rec.id)
    assert stored is not None and stored.status == Status.FAILED
    assert stored.termination_reason == "startup_failed" and f"injected failure of {failing}" in stored.error
    assert stored.ip not in node.store.ips_in_use()  # the address is free again


def test_undo_reports_every_cleanup_error(node) -> None:
    node.world.fail_on.update(wait_ready=failure("agent"), destroy=failure("runc delete"),
                              remove_netns=failure("ip netns del"))
    rec = _rec()
    with pytest.raises(CommandFailed):
        run(node.assembler.assemble(rec, node.boot_source()))
    stored = node.store.get(rec.id)
    assert stored is not None and "cleanup also failed" in stored.error
    assert "runc delete" in stored.error and "ip netns del" in stored.error
    assert node.world.alive() == {"container": {ids.container(rec.id)}, "netns": {rec.id}}  # only what failed


def test_teardown_walks_the_table_in_reverse(node) -> None:
    rec = run(node.assembler.assemble(_rec(), node.boot_source(), policy=parse(deny_out=["10.0.0.0/8"])))
    node.world.calls.clear()
    run(node.assembler.teardown(rec.id))
    assert node.world.calls == ["destroy", "remove_egress", "remove_netns", "unmount", "remove_rootfs"]
    assert node.world.alive() == {}
    run(node.assembler.teardown(rec.id))  # idempotent: a second teardown finds nothing, fails on nothing


def test_teardown_gathers_all_errors_in_an_exception_group(node) -> None:
    rec = run(node.assembler.assemble(_rec(), node.boot_source()))
    node.world.fail_on.update(destroy=failure("runc"), remove_rootfs=failure("btrfs"))
    with pytest.raises(TeardownFailed) as err:
        run(node.assembler.teardown(rec.id))
    exc = err.value
    assert isinstance(exc, ExceptionGroup) and isinstance(exc, InternalFailure)
    assert [str(e) for e in exc.exceptions] == [str(failure("runc")), str(failure("btrfs"))]
    assert "runc" in exc.message and "btrfs" in exc.message and exc.status == 500
    # Both failed parts are still there; the ones between them were removed all the same.
    assert node.world.alive() == {"container": {ids.container(rec.id)}, "rootfs": {rec.id}}
    try:
        raise exc
    except* CommandFailed as group:  # except* sees each error
        assert len(group.exceptions) == 2


def test_teardown_of_leftovers_without_a_record(node) -> None:
    """Reconcile's case: only some parts exist, no record (a crash before the insert)."""
    sid = ids.new_id()
    node.world.add("netns", sid)
    node.world.add("rootfs", sid)
    run(node.assembler.teardown(sid))
    assert node.world.alive() == {}


def test_name_taken_and_no_address_make_nothing(node) -> None:
    run(node.assembler.assemble(_rec("web"), node.boot_source()))
    node.world.calls.clear()
    with pytest.raises(NameTaken):
        run(node.assembler.assemble(_rec("web"), node.boot_source()))
    assert node.world.calls == []
    for _ in range(4):  # a /29 has six host addresses: the gateway, "web", and these four
        run(node.assembler.assemble(_rec(), node.boot_source()))
    node.world.calls.clear()
    with pytest.raises(LimitExceeded):
        run(node.assembler.assemble(_rec(), node.boot_source()))
    assert node.world.calls == []


def test_memory_restore_proves_the_dumped_key_then_rotates(node) -> None:
    snap = node.tmp / "snap"
    (snap / "rootfs").mkdir(parents=True)
    (snap / "mem").mkdir()
    base = run(node.assembler.assemble(_rec(), node.boot_source()))
    cfg = __import__("json").loads((node.settings.sandboxes_dir / base.id / "config.json").read_text())
    manifest = {"image": "cellbox/debian:latest", "image_mb": 100, "sandbox_id": base.id, "bundle_config": cfg,
                "resources": {"cpus": 1.0, "memory_mb": 512, "disk_mb": 1024, "pids_limit": 256}}
    node.world.calls.clear()
    rec = run(node.assembler.assemble(_rec(), RestoreSource(snap, manifest, memory=True)))
    assert [c for c in node.world.calls if c in ("run", "restore", "set_hostname", "wait_ready", "rotate")] == [
        "restore", "set_hostname", "wait_ready", "rotate"]
    assert node.agent.keys[-1] == bytes.fromhex(base.extra["agent_key"])  # the source's key, then a new one
    assert rec.extra["agent_key"] == "ab" * 32 and node.store.get(rec.id).extra["agent_key"] == "ab" * 32
