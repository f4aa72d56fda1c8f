"""The seams: what the manager needs from ``runtime/``, ``storage/`` and ``network/``.

Why protocols: manager logic (undo on failure, teardown, warm-pool rules, reconcile
decisions) used to call ``runc``, ``btrfs`` and ``ip`` directly, so it could only be
tested as root on a btrfs pool. Each protocol is the handful of calls ``assemble``
makes; the real implementations are ``runtime/node.py``, ``storage/node.py`` and
``network/node.py``, the fakes ``tests/unit/manager/fakes.py``. Structural typing
(``typing.Protocol``): the subsystems do not import the manager to implement them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..network.egress import Resolved
from ..network.policy import EgressPolicy
from ..runtime.runc import State


class Runtime(Protocol):
    """Containers: start one (boot or CRIU restore), stop one, ask for its state; and
    the idmapped mount through which a user-namespaced container sees its rootfs."""

    async def run(self, container_id: str, bundle: Path) -> int: ...

    async def restore(self, container_id: str, bundle: Path, images: Path, work: Path, *, lazy: bool = False,
                      cleanup: Sequence[Path] = (), remote: dict[str, Any] | None = None) -> int: ...

    async def settled(self, container_id: str) -> None: ...

    async def settle_all(self) -> None: ...

    async def destroy(self, container_id: str) -> None: ...

    async def state(self, container_id: str) -> State | None: ...

    async def list_ids(self) -> list[str]: ...

    async def mount_idmapped(self, source: Path, target: Path, base: int) -> None: ...

    async def unmount(self, target: Path) -> None: ...

    async def prepare(self) -> None: ...

    async def netns_hook(self, wiring: list[str], base: int) -> dict[str, Any]: ...

    async def set_hostname(self, pid: int, hostname: str) -> None: ...


class Storage(Protocol):
    """Root filesystems in the pool: made from an image or a snapshot, with a quota."""

    def rootfs_path(self, sandbox_id: str) -> Path: ...

    async def create_rootfs(self, sandbox_id: str, source: Path, writable_mb: int) -> Path: ...

    async def remove_rootfs(self, sandbox_id: str) -> None: ...


class Network(Protocol):
    """A sandbox's network: its netns + veth (or the hook that makes them) and egress."""

    async def create_netns(self, sandbox_id: str, address: ipaddress.IPv4Address) -> str: ...

    async def prepare_hook(self, sandbox_id: str, address: ipaddress.IPv4Address) -> list[str]: ...

    async def remove_netns(self, sandbox_id: str, address: ipaddress.IPv4Address | None) -> None: ...

    async def resolve(self, policy: EgressPolicy | None) -> Resolved: ...

    async def apply_egress(self, sandbox_id: str, ip: str, policy: EgressPolicy,
                           resolved: Resolved | None) -> None: ...

    async def remove_egress(self, sandbox_id: str) -> None: ...


class Agent(Protocol):
    """The in-sandbox agent as the manager sees it while starting a sandbox."""

    async def wait_ready(self, ip: str, port: int, key: bytes | None, *, init_pid: int | None,
                         log_path: Path, timeout: float) -> None: ...

    async def rotate(self, ip: str, port: int, old: bytes) -> str: ...
