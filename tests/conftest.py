"""Shared fixtures: a real sandbox manager on a background event loop, and leak checks.

Integration tests need root, runc, the btrfs pool and the default image (made by
``scripts/setup.sh``); they are skipped with the reason when those are missing. A
``sandboxes`` factory records every sandbox a test creates and destroys them at
teardown, even when the test fails; the session ends by asserting the host holds no
container, netns, veth, cgroup, rootfs or mount of ours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

# No test may send a DNS query off this machine: every resolver of a test (the
# sandboxes' forwarders, the policy checks) defaults to a loopback address where
# nothing answers, unless a test points it at its own DNS server
# (tests/nettest/internet.py). Set before cellbox.config reads the environment.
os.environ.setdefault("CELLBOX_DNS_UPSTREAM", "127.0.0.1")

from cellbox.config import Settings, load  # noqa: E402
from cellbox.manager.records import SandboxRecord
from cellbox.manager.sandboxes import CreateSpec, SandboxManager
from cellbox.manager.store import Store

from .leaks import leftovers, orphaned_records

T = TypeVar("T")


def _missing_requirements(settings: Settings) -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    from cellbox.storage import images, pool

    if not pool.is_btrfs(settings.pool):
        return "storage pool not mounted (run scripts/setup.sh)"
    if not images.ImageStore(settings).exists(settings.default_image):
        return "default image missing (run scripts/setup.sh)"
    return None


class LoopThread:
    """An asyncio loop in a thread, so sync tests can drive the async manager."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load()


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="session")
def manager(settings: Settings, loop_thread: LoopThread) -> Iterator[SandboxManager]:
    if reason := _missing_requirements(settings):
        pytest.skip(reason)
    store = Store(settings.db_path)
    # No warm pool here: tests check exactly what each create makes; the pool has its
    # own test with its own manager.
    mgr = SandboxManager(dataclasses.replace(settings, warm_pool_size=0), store)
    loop_thread.run(mgr.start())
    yield mgr
    loop_thread.run(mgr.stop())
    store.close()


class Sandboxes:
    """Creates sandboxes for one test and destroys every one of them afterwards."""

    def __init__(self, manager: SandboxManager, lt: LoopThread) -> None:
        self.manager, self.lt = manager, lt
        self.made: list[str] = []

    def create(self, **kwargs: Any) -> SandboxRecord:
        spec = CreateSpec(**kwargs)
        try:
            rec = self.lt.run(self.manager.create(spec))
        except Exception:
            raise
        self.made.append(rec.id)
        return rec

    def destroy(self, rec: SandboxRecord) -> SandboxRecord:
        return self.lt.run(self.manager.destroy(rec.id))

    def agent(self, rec: SandboxRecord, timeout: float = 60) -> httpx.Client:
        ip, port = self.manager.agent_address(rec)
        return httpx.Client(base_url=f"http://{ip}:{port}", timeout=timeout)

    def run(self, rec: SandboxRecord, command: str, *args: str, timeout: float = 60, **body: Any) -> dict[str, Any]:
        """Run a command through the agent's SSE run route; return stdout/stderr/exit info."""
        from .sse import run_command

        with self.agent(rec, timeout=timeout + 30) as client:
            return run_command(client, command, list(args), timeout=timeout, **body)

    def sh(self, rec: SandboxRecord, script: str, timeout: float = 60) -> dict[str, Any]:
        return self.run(rec, "/bin/sh", "-c", script, timeout=timeout)

    def cleanup(self) -> None:
        for sid in self.made:
            try:
                self.lt.run(self.manager.destroy(sid))
            except Exception:  # noqa: BLE001 - teardown must reach every sandbox
                self.lt.run(self.manager.teardown(sid))


@pytest.fixture
def sandboxes(manager: SandboxManager, loop_thread: LoopThread) -> Iterator[Sandboxes]:
    sb = Sandboxes(manager, loop_thread)
    try:
        yield sb
    finally:
        sb.cleanup()


@pytest.fixture
def server_internet(tmp_path):
    """The test "internet" (tests/nettest/internet.py), with the resolver of every
    cellbox process on this host (a live server's too) pointed at its DNS server."""
    from .nettest.internet import Internet, resolver_upstream

    net = Internet(tmp_path)
    try:
        with resolver_upstream(load().data_dir):
            yield net
    finally:
        net.close()


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_suite(settings: Settings) -> Iterator[None]:
    """The suite as a whole must leave nothing of ours behind on the host."""
    if os.geteuid() != 0:
        yield
        return
    import time

    started_ms = int(time.time() * 1000)
    before = leftovers(settings, orphans_only=True)
    yield
    after = leftovers(settings, orphans_only=True)
    new = {k: sorted(set(v) - set(before.get(k, []))) for k, v in after.items()}
    new = {k: v for k, v in new.items() if v}
    assert not new, f"the test suite leaked host objects: {new}"
    forgotten = orphaned_records(settings, started_ms)
    assert not forgotten, f"the test suite left sandboxes running that no process manages: {forgotten}"
