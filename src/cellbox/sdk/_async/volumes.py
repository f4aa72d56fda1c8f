"""Volumes through the lifecycle API: create, list, version, fork, delete, and mount
into (or out of) a running sandbox. Reached as ``client.volumes``."""

from __future__ import annotations

import builtins
from typing import Any

from .._errors import VolumeNotFoundError
from .._models import SandboxInfo
from .._volume_models import VolumeInfo, VolumeVersion



class AsyncVolumes:
    def __init__(self, client: Any) -> None:
        self._client = client

    async def create(self, name: str, *, size_mb: int | None = None) -> VolumeInfo:
        """A new empty volume of ``size_mb`` MiB (server default 1024)."""
        body: dict[str, Any] = {"name": name}
        if size_mb is not None:
            body["size_mb"] = size_mb
        response = await self._client._request("POST", "/volumes", json=body)
        return VolumeInfo.from_json(response.json())

    async def list(self) -> builtins.list[VolumeInfo]:
        data = (await self._client._request("GET", "/volumes")).json()
        return [VolumeInfo.from_json(v) for v in data.get("volumes", [])]

    async def get(self, volume: str) -> VolumeInfo:
        """By name or ID; :class:`VolumeNotFoundError` if there is none."""
        response = await self._client._request("GET", f"/volumes/{volume}", not_found=VolumeNotFoundError)
        return VolumeInfo.from_json(response.json())

    async def delete(self, volume: str) -> None:
        """Delete a volume and its versions (:class:`Conflict` while mounted). Gone is fine."""
        await self._client._request("DELETE", f"/volumes/{volume}", ok_statuses=(404,))

    async def snapshot(self, volume: str, message: str = "") -> VolumeVersion:
        """A read-only version of the volume as it is now (O(1))."""
        response = await self._client._request("POST", f"/volumes/{volume}/snapshots", json={"message": message},
                                               not_found=VolumeNotFoundError)
        return VolumeVersion.from_json(response.json())

    async def snapshots(self, volume: str) -> builtins.list[VolumeVersion]:
        data = (await self._client._request("GET", f"/volumes/{volume}/snapshots",
                                            not_found=VolumeNotFoundError)).json()
        return [VolumeVersion.from_json(v) for v in data.get("snapshots", [])]

    async def delete_snapshot(self, volume: str, snapshot_id: str) -> None:
        await self._client._request("DELETE", f"/volumes/{volume}/snapshots/{snapshot_id}",
                                    not_found=VolumeNotFoundError)

    async def fork(self, volume: str, name: str, *, snapshot_id: str | None = None,
                   size_mb: int | None = None) -> VolumeInfo:
        """A new writable volume from ``volume``'s head (or one of its versions)."""
        body: dict[str, Any] = {"name": name}
        if snapshot_id is not None:
            body["snapshot_id"] = snapshot_id
        if size_mb is not None:
            body["size_mb"] = size_mb
        response = await self._client._request("POST", f"/volumes/{volume}/fork", json=body,
                                               not_found=VolumeNotFoundError)
        return VolumeInfo.from_json(response.json())

    async def attach(self, sandbox: str, volume: str, mount_path: str, *, read_only: bool = False,
                     snapshot_id: str | None = None) -> SandboxInfo:
        """Mount ``volume`` into a running sandbox at ``mount_path`` (one writer at a time:
        :class:`Conflict` names the sandbox that writes it)."""
        body: dict[str, Any] = {"file_system_id": volume, "mount_path": mount_path, "read_only": read_only}
        if snapshot_id is not None:
            body["snapshot_id"] = snapshot_id
        response = await self._client._request("POST", f"/sandboxes/{sandbox}/file_systems", json=body)
        return SandboxInfo.from_json(response.json())

    async def detach(self, sandbox: str, mount_path: str) -> SandboxInfo:
        """Unmount the volume at ``mount_path`` (:class:`Conflict` while a process uses it)."""
        response = await self._client._request("DELETE", f"/sandboxes/{sandbox}/file_systems",
                                               json={"mount_path": mount_path})
        return SandboxInfo.from_json(response.json())
