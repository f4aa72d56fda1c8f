"""Sandbox pools (Tensorlake's ``sandbox-pools``): a project's named warm pool of one
image; ``claim`` returns a running sandbox, warm if the pool has one. Reached as
``client.pools``."""

from __future__ import annotations

import builtins
from typing import Any

from .._models import SandboxInfo
from .._shared import KEEP


class AsyncPools:
    # ``client`` is the AsyncExtras that owns this object (it calls ``_request``);
    # typed Any so that extras -> pools stays the only import edge between them.
    def __init__(self, client: Any) -> None:
        self._client = client

    @staticmethod
    def _body(image: str, cpus: float, memory_mb: int, disk_mb: int | None, timeout_secs: int,
              entrypoint: builtins.list[str] | None, max_containers: int | None, warm_containers: int,
              network: dict[str, Any] | None | object) -> dict[str, Any]:
        body: dict[str, Any] = {"image": image, "resources": {"cpus": cpus, "memory_mb": memory_mb},
                                "timeout_secs": timeout_secs, "warm_containers": warm_containers}
        if disk_mb is not None:
            body["resources"]["disk_mb"] = disk_mb
        if entrypoint is not None:
            body["entrypoint"] = entrypoint
        if max_containers is not None:
            body["max_containers"] = max_containers
        if network is not KEEP:
            body["network"] = network
        return body

    async def create(self, image: str, *, cpus: float = 1.0, memory_mb: int = 1024, disk_mb: int | None = None,
                     timeout_secs: int = 0, entrypoint: builtins.list[str] | None = None,
                     max_containers: int | None = None, warm_containers: int = 0,
                     network: dict[str, Any] | None | object = KEEP) -> dict[str, Any]:
        """Make a pool; returns its info (``id``, ``containers``...)."""
        body = self._body(image, cpus, memory_mb, disk_mb, timeout_secs, entrypoint, max_containers,
                          warm_containers, network)
        pool_id = (await self._client._request("POST", "/sandbox-pools", json=body)).json()["pool_id"]
        return await self.get(pool_id)

    async def get(self, pool_id: str) -> dict[str, Any]:
        return (await self._client._request("GET", f"/sandbox-pools/{pool_id}")).json()  # type: ignore[no-any-return]

    async def list(self) -> builtins.list[dict[str, Any]]:
        return (await self._client._request("GET", "/sandbox-pools")).json()["pools"]  # type: ignore[no-any-return]

    async def update(self, pool_id: str, image: str, *, cpus: float = 1.0, memory_mb: int = 1024,
                     disk_mb: int | None = None, timeout_secs: int = 0, entrypoint: builtins.list[str] | None = None,
                     max_containers: int | None = None, warm_containers: int = 0,
                     network: dict[str, Any] | None | object = KEEP) -> dict[str, Any]:
        """Replace a pool's definition (``network`` left out: kept; None: cleared)."""
        body = self._body(image, cpus, memory_mb, disk_mb, timeout_secs, entrypoint, max_containers,
                          warm_containers, network)
        return (await self._client._request("PUT", f"/sandbox-pools/{pool_id}", json=body)).json()  # type: ignore[no-any-return]

    async def delete(self, pool_id: str) -> None:
        """Delete a pool; a ``Conflict`` while sandboxes claimed from it still run."""
        await self._client._request("DELETE", f"/sandbox-pools/{pool_id}")

    async def claim(self, pool_id: str) -> SandboxInfo:
        """A running sandbox of the pool (warm if one is ready)."""
        data = (await self._client._request("POST", f"/sandbox-pools/{pool_id}/sandboxes")).json()
        return SandboxInfo.from_json(
            (await self._client._request("GET", f"/sandboxes/{data['sandbox_id']}")).json())
