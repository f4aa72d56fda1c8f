"""The service's create policies without root: ``wait: false`` answers with the
pending record, a budget answers with the record as it is when it runs out (the
create goes on), a delete of a pending create cancels it (lets it finish, then
destroys it: ``cancelled``), a failure after the record exists is a failed record,
one before it is the error itself.

The manager below the service is a thin stand-in over the real parts table with
fake seams (``fakes.py``); the agent's readiness is the gate a test opens."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from cellbox import ids
from cellbox.errors import NameTaken, SandboxNotFound
from cellbox.manager.records import SandboxRecord, Status
from cellbox.manager.service import CreateOptions, SandboxService
from cellbox.manager.snapshot_store import SnapshotStore
from cellbox.manager.spec import CreateSpec

from .fakes import failure


class Manager:
    """What ``SandboxService`` calls of the lifecycle, over the real ``Assembler``."""

    def __init__(self, node) -> None:
        self.node = node
        self.store = node.store
        self.settings = node.settings
        self.image_manager = SimpleNamespace(entrypoint=lambda image: None)
        self.memory = SimpleNamespace(snapshots=SnapshotStore(node.store.db))

    async def create(self, spec: CreateSpec) -> SandboxRecord:
        rec = SandboxRecord(id=spec.sandbox_id or ids.new_id(), namespace=spec.namespace, name=spec.name,
                            image="cellbox/debian:latest", cpus=spec.cpus, memory_mb=spec.memory_mb,
                            disk_mb=1024, pids_limit=spec.pids_limit, extra={"image_mb": 100})
        return await self.node.assembler.assemble(rec, self.node.boot_source())

    def get(self, ref: str, namespace: str = "default") -> SandboxRecord:
        rec = self.store.get(ref) if ids.is_id(ref) else self.store.get_by_name(namespace, ref)
        if rec is None:
            raise SandboxNotFound(ref)
        return rec

    async def destroy(self, ref: str, namespace: str = "default", *, reason: str = "terminated") -> SandboxRecord:
        rec = self.get(ref, namespace)
        await self.node.assembler.teardown(rec.id)
        rec.status, rec.termination_reason = Status.TERMINATED, reason
        self.store.update(rec)
        return rec


def _service(node) -> SandboxService:
    node.agent.gate = asyncio.Event()
    return SandboxService(Manager(node), proxy_port=1)  # type: ignore[arg-type]


def _opts(**kw) -> CreateOptions:
    return CreateOptions(spec=CreateSpec(**kw))


async def _until(svc: SandboxService, sid: str, status: Status) -> SandboxRecord:
    while (rec := svc.store.get(sid)) is None or rec.status != status:
        await asyncio.sleep(0.001)
    return rec


def test_no_wait_answers_pending_and_the_create_goes_on(node) -> None:
    async def go() -> None:
        svc = _service(node)
        rec = await svc.create(_opts(), wait=False, budget=None)
        assert rec.status == Status.PENDING and rec.ip
        node.agent.gate.set()
        assert (await asyncio.wait_for(_until(svc, rec.id, Status.RUNNING), 10)).id == rec.id
        await svc.close()

    asyncio.run(go())


def test_budget_answers_with_the_record_as_it_is(node) -> None:
    async def go() -> None:
        svc = _service(node)
        rec = await svc.create(_opts(), wait=True, budget=0.01)
        assert rec.status == Status.PENDING  # the gate is shut: it cannot be running
        node.agent.gate.set()
        await asyncio.wait_for(_until(svc, rec.id, Status.RUNNING), 10)
        await svc.close()

    asyncio.run(go())


def test_wait_without_budget_answers_running(node) -> None:
    async def go() -> None:
        svc = _service(node)
        node.agent.gate.set()
        rec = await svc.create(_opts(), wait=True, budget=None)
        assert rec.status == Status.RUNNING
        await svc.close()

    asyncio.run(go())


def test_delete_of_a_pending_create_cancels_it(node) -> None:
    async def go() -> None:
        svc = _service(node)
        rec = await svc.create(_opts(), wait=False, budget=None)
        deleting = asyncio.ensure_future(svc.delete(rec.id, "default"))
        await asyncio.sleep(0.01)
        assert not deleting.done()  # it waits for the create: stopping it half-way leaves parts
        node.agent.gate.set()
        out = await asyncio.wait_for(deleting, 10)
        assert out.status == Status.TERMINATED and out.termination_reason == "cancelled"
        assert node.world.alive() == {}
        again = await svc.delete(rec.id, "default")  # idempotent
        assert again.termination_reason == "cancelled"
        await svc.close()

    asyncio.run(go())


def test_failure_after_the_record_is_a_failed_record(node) -> None:
    async def go() -> None:
        svc = _service(node)
        node.agent.gate.set()
        node.world.fail_on["run"] = failure("runc run")
        rec = await svc.create(_opts(), wait=True, budget=None)
        assert rec.status == Status.FAILED and "runc run" in rec.error
        assert node.world.alive() == {}
        await svc.close()

    asyncio.run(go())


def test_failure_before_the_record_is_the_error(node) -> None:
    async def go() -> None:
        svc = _service(node)
        node.agent.gate.set()
        await svc.create(_opts(name="web"), wait=True, budget=None)
        with pytest.raises(NameTaken):
            await svc.create(_opts(name="web"), wait=False, budget=None)
        with pytest.raises(SandboxNotFound):
            await svc.delete("nope", "default")
        await svc.close()

    asyncio.run(go())


def test_another_projects_sandbox_is_not_found(node) -> None:
    async def go() -> None:
        svc = _service(node)
        node.agent.gate.set()
        rec = await svc.create(_opts(namespace="p1"), wait=True, budget=None)
        with pytest.raises(SandboxNotFound):
            svc.get(rec.id, "p2")
        with pytest.raises(SandboxNotFound):
            await svc.delete(rec.id, "p2")
        assert svc.get(rec.id, "p1").status == Status.RUNNING
        await svc.close()

    asyncio.run(go())
