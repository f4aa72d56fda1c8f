"""Warm-pool rules without root: fill to size a few builds at a time, hand out only live
sandboxes, fall back when limits fail, hold refills back during a burst of claims,
destroy what is left (or finishes building) at close.

The pool is given callables (``build``, ``destroy``, ``rootfs``, ``preread``); only
the /proc liveness check of a claimed sandbox's init is replaced (a container's init
in its own cgroup cannot exist without root)."""

from __future__ import annotations

import asyncio

import pytest

from cellbox import ids
from cellbox.manager import warm
from cellbox.manager.records import SandboxRecord, Status
from cellbox.manager.spec import CreateSpec
from cellbox.runtime import bundle


class Harness:
    def __init__(self, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built: list[SandboxRecord] = []
        self.build_times: list[float] = []
        self.destroyed: list[tuple[str, str]] = []
        self.dead: set[str] = set()
        self.limits_fail: set[str] = set()
        self.running = 0
        self.max_running = 0
        monkeypatch.setattr(warm._procfs, "in_cgroup", lambda pid, path: path.rsplit("/", 1)[-1] not in self.dead)
        self.pool = warm.WarmPool(size, build=self.build, destroy=self.destroy, rootfs=lambda sid: None,
                                  preread=self.preread)

    async def build(self, spec: CreateSpec) -> SandboxRecord:
        assert spec.namespace == warm.WARM_NAMESPACE and spec.cpu_shares == bundle.MIN_SHARES
        self.build_times.append(asyncio.get_running_loop().time())
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        await asyncio.sleep(0.001)
        self.running -= 1
        rec = SandboxRecord(id=ids.new_id(), namespace=spec.namespace, name=None, image="img", cpus=spec.cpus,
                            memory_mb=spec.memory_mb, disk_mb=2048, pids_limit=spec.pids_limit,
                            status=Status.RUNNING, init_pid=1, extra={"image_mb": 100})
        self.built.append(rec)
        return rec

    async def destroy(self, rec: SandboxRecord, reason: str) -> None:
        self.destroyed.append((rec.id, reason))

    async def preread(self, root: object) -> None:
        pass

    def apply(self, rec: SandboxRecord, spec: CreateSpec, disk_mb: int) -> None:
        if rec.id in self.limits_fail:
            raise OSError("cgroup write failed")

    async def discard(self, rec: SandboxRecord) -> None:
        self.destroyed.append((rec.id, "dead"))

    async def filled(self) -> None:
        while self.pool.ready < self.pool.size:
            await asyncio.sleep(0.001)

    async def claim(self, **kw: object) -> SandboxRecord | None:
        return await self.pool.claim(CreateSpec(**kw), 4096, self.apply, self.discard)  # type: ignore[arg-type]


def test_fills_to_size_a_few_builds_at_a_time(monkeypatch) -> None:
    async def go() -> None:
        h = Harness(6, monkeypatch)
        h.pool.fill()
        assert h.pool.has_ready.is_set() is False
        await asyncio.wait_for(h.filled(), 10)
        # at most one build per CPU at once (issue 15: one at a time refilled too slowly)
        assert len(h.built) == 6 and 1 <= h.max_running <= warm.BUILD_PARALLEL
        assert h.pool.has_ready.is_set()
        await h.pool.close()

    asyncio.run(go())


def test_claim_shapes_the_sandbox_and_skips_dead_ones(monkeypatch) -> None:
    async def go() -> None:
        h = Harness(2, monkeypatch)
        h.pool.fill()
        await asyncio.wait_for(h.filled(), 10)
        newest = h.pool._ready[-1]
        h.dead.add(newest.id)  # its init died while it waited
        rec = await h.claim(namespace="p1", name="web", cpus=0.5, memory_mb=2048, timeout_secs=30)
        assert rec is not None and rec.id != newest.id
        assert (newest.id, "dead") in h.destroyed
        assert (rec.namespace, rec.name, rec.cpus, rec.memory_mb, rec.disk_mb, rec.timeout_secs) == (
            "p1", "web", 0.5, 2048, 4096, 30)
        assert rec.extra["warm"] is True
        await h.pool.close()

    asyncio.run(go())


def test_failed_limits_destroy_that_one_and_try_the_next(monkeypatch) -> None:
    async def go() -> None:
        h = Harness(2, monkeypatch)
        h.pool.fill()
        await asyncio.wait_for(h.filled(), 10)
        bad = h.pool._ready[-1]
        h.limits_fail.add(bad.id)
        rec = await h.claim(memory_mb=1024)
        assert rec is not None and rec.id != bad.id and (bad.id, "pool_error") in h.destroyed
        h.pool._closed = True  # no refills: the pool is now empty
        assert await h.claim(memory_mb=1024) is None
        await h.pool.close()

    asyncio.run(go())


def test_can_serve_only_its_image_and_full_shm(monkeypatch) -> None:
    async def go() -> None:
        h = Harness(1, monkeypatch)
        assert not h.pool.can_serve(CreateSpec())  # nothing ready yet
        h.pool.fill()
        await asyncio.wait_for(h.filled(), 10)
        assert h.pool.can_serve(CreateSpec(memory_mb=bundle.SHM_FULL_AT_MB))
        assert not h.pool.can_serve(CreateSpec(memory_mb=bundle.SHM_FULL_AT_MB - 1))  # /dev/shm sized to memory
        assert not h.pool.can_serve(CreateSpec(image="other"))
        await h.pool.close()

    asyncio.run(go())


def test_burst_is_a_rate_of_claims_not_a_count(monkeypatch) -> None:
    """A sequential user (one claim at a time) never counts as a burst; four claims
    within BURST_WINDOW do."""
    async def go() -> None:
        h = Harness(0, monkeypatch)
        h.pool._claimed()
        assert not h.pool._bursting()
        for _ in range(warm.BURST_CLAIMS - 1):
            h.pool._claimed()
        assert h.pool._bursting()
        await asyncio.sleep(warm.BURST_WINDOW * 1.5)
        assert not h.pool._bursting()  # the window moved on

    asyncio.run(go())


def test_refill_waits_for_quiet_after_a_burst(monkeypatch) -> None:
    """Lower bounds only (a loaded host only makes them later): no refill build starts
    before REFILL_QUIET has passed since the burst's last claim."""
    monkeypatch.setattr(warm, "REFILL_MAX_WAIT", 0.05)

    async def go() -> None:
        h = Harness(warm.BURST_CLAIMS, monkeypatch)
        h.pool.fill()
        await asyncio.wait_for(h.filled(), 10)
        first_fill = len(h.build_times)
        for _ in range(warm.BURST_CLAIMS):
            assert await h.claim() is not None
        last_claim = asyncio.get_running_loop().time()
        await asyncio.wait_for(h.filled(), 20)
        refills = h.build_times[first_fill:]
        assert len(refills) == warm.BURST_CLAIMS
        assert min(refills) >= last_claim + warm.REFILL_QUIET * 0.99
        await h.pool.close()

    asyncio.run(go())


def test_close_destroys_ready_and_late_builds(monkeypatch) -> None:
    async def go() -> None:
        h = Harness(2, monkeypatch)
        h.pool.fill()
        await asyncio.wait_for(h.filled(), 10)
        h.pool.size = 3
        h.pool.fill()  # one more build in flight while closing
        await h.pool.close()
        assert h.pool.ready == 0 and not h.pool.can_serve(CreateSpec())
        assert sorted(r for _, r in h.destroyed) == ["pool_closed"] * len(h.built)
        h.pool.fill()  # a closed pool builds nothing
        await asyncio.sleep(0.01)
        assert h.running == 0

    asyncio.run(go())


def test_growth_waits_for_the_cold_creates_then_builds_at_once(monkeypatch) -> None:
    """Issue 15: a sized pool grows after a burst, but not while the host's cold creates
    (the burst being served) are in flight or queued; once they are done it builds
    without waiting GROW_MAX_WAIT after the last claim."""
    from cellbox.manager.warm_sizing import SizingPolicy, WarmSizer

    monkeypatch.setattr(warm, "GROW_AFTER_COLD", 0.0)

    async def go() -> None:
        h = Harness(1, monkeypatch)
        busy = [True]
        h.pool = warm.WarmPool(1, build=h.build, destroy=h.destroy, rootfs=lambda sid: None, preread=h.preread,
                               sizer=WarmSizer(SizingPolicy(floor=1, budget_mb=1 << 20)), cold_busy=lambda: busy[0])
        h.pool.fill()
        await asyncio.wait_for(h.filled(), 10)
        for _ in range(5):  # a burst of creates the pool saw (one claim, four misses)
            if h.pool.can_serve(CreateSpec()):
                assert await h.claim() is not None
        assert h.pool.target() == 6  # 5 seen x 1.2
        built = len(h.built)
        await asyncio.sleep(0.3)
        assert len(h.built) <= built + 1  # only the floor's refill: growth waits for the cold creates
        busy[0] = False
        t0 = asyncio.get_running_loop().time()
        while h.pool.ready < 6:
            await asyncio.sleep(0.01)
        assert asyncio.get_running_loop().time() - t0 < warm.GROW_MAX_WAIT / 3
        await h.pool.close()

    asyncio.run(go())
