"""Fakes of the manager's seams (``cellbox.manager.ports``), for tests without root.

Each fake keeps what exists in a set, so a test can check that a failed create or a
teardown left nothing, and fails on demand at any call (``fail_on``), which is how
the undo at each part is driven. The record store is the real one (SQLite in a temp
dir): only what needs root (runc, btrfs, ip, nft) is faked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbox.errors import CommandFailed
from cellbox.network.egress import Resolved
from cellbox.network.policy import EgressPolicy
from cellbox.runtime.runc import State


@dataclass
class World:
    """Everything the fakes made, by kind: ``{"container": {...ids}, "rootfs": ...}``."""

    made: dict[str, set[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail_on: dict[str, Exception] = field(default_factory=dict)  # call name -> error it raises

    def call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail_on:
            raise self.fail_on[name]

    def add(self, kind: str, key: str) -> None:
        self.made.setdefault(kind, set()).add(key)

    def drop(self, kind: str, key: str) -> None:
        self.made.get(kind, set()).discard(key)

    def alive(self) -> dict[str, set[str]]:
        return {k: v for k, v in self.made.items() if v}


def failure(what: str) -> CommandFailed:
    return CommandFailed([what], 1, f"injected failure of {what}")


class FakeRuntime:
    def __init__(self, world: World) -> None:
        self.w = world
        self.next_pid = 1000

    async def run(self, container_id: str, bundle: Path) -> int:
        self.w.add("container", container_id)  # runc leaves a created container on failure too
        self.w.call("run")
        assert (bundle / "config.json").is_file()
        self.next_pid += 1
        return self.next_pid

    async def restore(self, container_id: str, bundle: Path, images: Path, work: Path, *, lazy: bool = False,
                      cleanup: Sequence[Path] = ()) -> int:
        self.w.add("container", container_id)
        self.w.call("restore")
        self.next_pid += 1
        return self.next_pid

    async def settled(self, container_id: str) -> None:
        self.w.call("settled")

    async def settle_all(self) -> None:
        pass

    async def destroy(self, container_id: str) -> None:
        self.w.call("destroy")
        self.w.drop("container", container_id)

    async def state(self, container_id: str) -> State | None:
        return State("running", 1) if container_id in self.w.made.get("container", set()) else None

    async def list_ids(self) -> list[str]:
        return sorted(self.w.made.get("container", set()))

    async def mount_idmapped(self, source: Path, target: Path, base: int) -> None:
        self.w.call("mount_idmapped")
        self.w.add("mount", str(target))

    async def unmount(self, target: Path) -> None:
        self.w.call("unmount")
        self.w.drop("mount", str(target))

    async def netns_hook(self, wiring: list[str], base: int) -> dict[str, Any]:
        return {"prestart": [{"path": "/bin/true", "args": ["true", *wiring]}]}

    async def set_hostname(self, pid: int, hostname: str) -> None:
        self.w.call("set_hostname")


class FakeStorage:
    """Rootfs "subvolumes" are plain directories under ``pool``."""

    def __init__(self, world: World, pool: Path) -> None:
        self.w = world
        self.pool = pool

    def rootfs_path(self, sandbox_id: str) -> Path:
        return self.pool / "sandboxes" / sandbox_id

    async def create_rootfs(self, sandbox_id: str, source: Path, writable_mb: int) -> Path:
        self.w.call("create_rootfs")
        dest = self.rootfs_path(sandbox_id)
        dest.mkdir(parents=True)
        self.w.add("rootfs", sandbox_id)
        return dest

    async def remove_rootfs(self, sandbox_id: str) -> None:
        self.w.call("remove_rootfs")
        path = self.rootfs_path(sandbox_id)
        if path.exists():
            import shutil

            shutil.rmtree(path)
        self.w.drop("rootfs", sandbox_id)


class FakeNetwork:
    def __init__(self, world: World) -> None:
        self.w = world

    async def create_netns(self, sandbox_id: str, address: ipaddress.IPv4Address) -> str:
        self.w.call("create_netns")
        self.w.add("netns", sandbox_id)
        return f"/run/netns/cb-{sandbox_id}"

    async def prepare_hook(self, sandbox_id: str, address: ipaddress.IPv4Address) -> list[str]:
        self.w.call("prepare_hook")
        self.w.add("netns", sandbox_id)
        return [f"cb-{sandbox_id}"]

    async def remove_netns(self, sandbox_id: str, address: ipaddress.IPv4Address | None) -> None:
        self.w.call("remove_netns")
        self.w.drop("netns", sandbox_id)

    async def resolve(self, policy: EgressPolicy | None) -> Resolved:
        return {}

    async def apply_egress(self, sandbox_id: str, ip: str, policy: EgressPolicy, resolved: Resolved | None) -> None:
        self.w.add("egress", sandbox_id)
        self.w.call("apply_egress")

    async def remove_egress(self, sandbox_id: str) -> None:
        self.w.call("remove_egress")
        self.w.drop("egress", sandbox_id)


class FakeAgent:
    def __init__(self, world: World) -> None:
        self.w = world
        self.keys: list[bytes | None] = []
        self.gate: Any = None  # an asyncio.Event: wait_ready blocks until it is set


    async def wait_ready(self, ip: str, port: int, key: bytes | None, *, init_pid: int | None,
                         log_path: Path, timeout: float) -> None:
        self.keys.append(key)
        if self.gate is not None:
            await self.gate.wait()
        self.w.call("wait_ready")

    async def rotate(self, ip: str, port: int, old: bytes) -> str:
        self.w.call("rotate")
        return "ab" * 32
