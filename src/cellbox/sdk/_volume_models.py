"""What the volume routes answer, as plain dataclasses (``client.volumes``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VolumeMount:
    sandbox_id: str
    mount_path: str
    read_only: bool
    snapshot_id: str | None = None


@dataclass(frozen=True)
class VolumeInfo:
    id: str
    name: str
    size_mb: int
    created_at: int
    status: str = "ready"
    forked_from: dict[str, Any] | None = None
    mounts: list[VolumeMount] = field(default_factory=list)
    used_bytes: int | None = None  # only from ``get``

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeInfo:
        mounts = [VolumeMount(m["sandbox_id"], m["mount_path"], m["read_only"], m.get("snapshot_id"))
                  for m in data.get("mounts") or []]
        return cls(id=data["id"], name=data["name"], size_mb=data["size_mb"], created_at=data["created_at"],
                   status=data.get("status", "ready"), forked_from=data.get("forked_from"), mounts=mounts,
                   used_bytes=data.get("used_bytes"))


@dataclass(frozen=True)
class VolumeVersion:
    snapshot_id: str
    volume_id: str
    message: str
    created_at: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeVersion:
        return cls(data["snapshot_id"], data["volume_id"], data.get("message", ""), data["created_at"])
