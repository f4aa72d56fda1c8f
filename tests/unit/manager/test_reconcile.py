"""Reconcile's decisions per record, without root: what a restarted server does with
each kind of record a crash left (``reconcile._reconcile_record``), using the real
parts table over fake seams for the teardown."""

from __future__ import annotations

import asyncio

import pytest

from cellbox import ids
from cellbox.manager import reconcile
from cellbox.manager.records import SandboxRecord, Status
from cellbox.manager.warm import WARM_NAMESPACE

from .test_service import Manager


class ReconcilingManager(Manager):
    def __init__(self, node) -> None:
        super().__init__(node)
        self.asked: list[tuple[str, str]] = []
        outer = self

        class Memory:
            async def recover(self, rec: SandboxRecord) -> SandboxRecord:
                outer.asked.append(("recover", rec.id))
                rec.status = Status.RUNNING  # its container still ran (memstate.recover decides)
                outer.store.update(rec)
                return rec

            async def recover_suspended(self, rec: SandboxRecord) -> SandboxRecord:
                outer.asked.append(("recover_suspended", rec.id))
                return rec

        self.memory = Memory()

    async def teardown(self, sandbox_id: str) -> None:
        await self.node.assembler.teardown(sandbox_id)

    async def refresh(self, rec: SandboxRecord) -> SandboxRecord:
        self.asked.append(("refresh", rec.id))
        return rec


def _record(node, status: Status, namespace: str = "default") -> SandboxRecord:
    rec = SandboxRecord(id=ids.new_id(), namespace=namespace, name=None, image="img", cpus=1.0, memory_mb=512,
                        disk_mb=1024, pids_limit=256)
    asyncio.run(node.assembler.allocate(rec))
    rec.status = status
    node.store.update(rec)
    for kind in ("rootfs", "netns"):  # what a crash mid-create leaves
        node.world.add(kind, rec.id)
    return rec


@pytest.mark.parametrize("status, asked, outcome, bucket", [
    (Status.PENDING, None, Status.FAILED, "failed"),
    (Status.RUNNING, "refresh", Status.RUNNING, "adopted"),
    (Status.SUSPENDING, "recover", Status.RUNNING, "adopted"),
    (Status.SNAPSHOTTING, "recover", Status.RUNNING, "adopted"),
    (Status.SUSPENDED, "recover_suspended", Status.SUSPENDED, "adopted"),
])
def test_each_status_gets_its_decision(node, status, asked, outcome, bucket) -> None:
    mgr = ReconcilingManager(node)
    rec = _record(node, status)
    report = reconcile.Report()
    asyncio.run(reconcile._reconcile_record(mgr, rec, report))  # type: ignore[arg-type]
    assert getattr(report, bucket) == [rec.id]
    stored = node.store.get(rec.id)
    assert stored is not None and stored.status == outcome
    assert mgr.asked == ([(asked, rec.id)] if asked else [])
    if status == Status.PENDING:  # an interrupted create: its parts are gone, its record says why
        assert stored.termination_reason == "startup_interrupted" and node.world.alive() == {}


def test_a_dead_servers_warm_sandbox_is_destroyed(node) -> None:
    mgr = ReconcilingManager(node)
    rec = _record(node, Status.RUNNING, namespace=WARM_NAMESPACE)
    report = reconcile.Report()
    asyncio.run(reconcile._reconcile_record(mgr, rec, report))  # type: ignore[arg-type]
    assert report.reclaimed == [rec.id] and node.world.alive() == {}
    stored = node.store.get(rec.id)
    assert stored is not None and stored.status == Status.TERMINATED and stored.termination_reason == "pool_discarded"


def test_a_suspended_record_no_resume_touched_is_left_without_asking_runc(node) -> None:
    """At 100,000 suspended records reconcile must not ask ``runc state`` (nor walk /proc)
    per record: one ``runc list`` and one /proc walk decide which need ``recover_suspended``."""
    rec = _record(node, Status.SUSPENDED)
    sandboxes = node.settings.sandboxes_dir
    assert reconcile.settled_suspended(sandboxes, rec, {}, set())
    # its container exists (a resume got as far as restoring it): recover it
    assert not reconcile.settled_suspended(sandboxes, rec, {ids.container(rec.id): "running"}, set())
    # a lazy-pages daemon still serves its images
    assert not reconcile.settled_suspended(sandboxes, rec, {}, {str(sandboxes / rec.id / "suspend")})
    # a cut-short restore left its work dir
    (sandboxes / rec.id / "restore-1").mkdir(parents=True)
    assert not reconcile.settled_suspended(sandboxes, rec, {}, set())
    running = _record(node, Status.RUNNING)
    assert not reconcile.settled_suspended(sandboxes, running, {}, set())
