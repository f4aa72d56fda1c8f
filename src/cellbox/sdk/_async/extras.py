"""Issue 14's client calls: live resize, logs with Tensorlake's filters, archived
sandboxes, and sandbox pools (``client.pools``). A mixin of the client, so the client
module stays one job (lifecycle) and these stay together."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

import httpx

from .._models import SandboxInfo
from .pools import AsyncPools

if TYPE_CHECKING:
    from collections.abc import Iterable


class AsyncExtras:
    """Mixed into the client; ``_request`` is the client's."""

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:  # pragma: no cover
        raise NotImplementedError

    @property
    def pools(self) -> AsyncPools:
        return AsyncPools(self)

    async def resize(self, sandbox_id_or_name: str, *, cpus: float | None = None, memory_mb: int | None = None,
                     disk_mb: int | None = None) -> SandboxInfo:
        """Resize a running sandbox in place (CPU, memory, root disk; the disk only
        grows). Done when this returns: ``info.raw["resource_resize"]`` says which
        generation. Shrinking memory below what the sandbox holds is a ``Conflict``."""
        resources = {k: v for k, v in (("cpus", cpus), ("memory_mb", memory_mb), ("disk_mb", disk_mb))
                     if v is not None}
        if not resources:
            raise ValueError("resize: name at least one of cpus, memory_mb, disk_mb")
        response = await self._request("PATCH", f"/sandboxes/{sandbox_id_or_name}", json={"resources": resources})
        return SandboxInfo.from_json(response.json())

    async def logs(self, sandbox_id_or_name: str, *, levels: Iterable[str] = (),
                   process_ids: Iterable[str | int] = (), body: str | None = None, head: int | None = None,
                   tail: int | None = None, all_pages: bool = True) -> builtins.list[dict[str, Any]]:
        """Log entries (Tensorlake's SandboxLogSignal dicts), filtered by the server; every
        page unless ``all_pages`` is false. A terminated sandbox's are kept."""
        params: dict[str, Any] = {"level": list(levels), "processId": [str(p) for p in process_ids]}
        for key, value in (("body", body), ("head", head), ("tail", tail)):
            if value is not None:
                params[key] = value
        out: builtins.list[dict[str, Any]] = []
        while True:
            data = (await self._request("GET", f"/sandboxes/{sandbox_id_or_name}/logs", params=params)).json()
            out += data.get("logs", [])
            token = data.get("nextToken")
            if not token or not all_pages or head is not None:
                return out
            params["nextToken"] = token

    async def log_processes(self, sandbox_id_or_name: str) -> builtins.list[dict[str, Any]]:
        """The processes that printed something (the values ``process_ids`` filters by)."""
        return (await self._request("GET", f"/sandboxes/{sandbox_id_or_name}/processes")).json()["processes"]

    async def list_archived(self, *, limit: int = 100) -> builtins.list[SandboxInfo]:
        """Terminated and failed sandboxes still in the archive, newest first."""
        out: builtins.list[SandboxInfo] = []
        params: dict[str, Any] = {"limit": min(limit, 1000)}
        while len(out) < limit:
            data = (await self._request("GET", "/archived-sandboxes", params=params)).json()
            out += [SandboxInfo.from_json(s) for s in data.get("sandboxes", [])]
            if not data.get("next_cursor"):
                break
            params["cursor"] = data["next_cursor"]
        return out[:limit]

    async def get_archived(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.from_json((await self._request("GET", f"/archived-sandboxes/{sandbox_id}")).json())

