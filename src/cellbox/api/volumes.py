"""Volume routes: ``/volumes`` (ours) and Tensorlake's ``sandboxes/{id}/file_systems``.

Tensorlake's file systems live in its cloud's Artifact Storage (the SDK's
``FilesystemClient`` speaks that protocol: tokens, object-store uploads, native
versions) and are not served here; what its sandbox API does with them (mount on
create, attach, detach, list in ``SandboxInfo.file_systems``) is, with a cellbox
volume's name as the ``file_system_id`` and a volume version as the ``snapshot_id``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Path, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from ..errors import InvalidRequest
from ..manager import volume_mounts
from ..manager.volume_store import VersionRecord, VolumeRecord
from ..manager.volumes import VolumeManager
from . import public_urls, render
from .models import _Model

VolumeRef = Annotated[str, Path(min_length=1, max_length=128, description="volume name or ID")]
VersionRef = Annotated[str, Path(min_length=1, max_length=128)]
SandboxRef = Annotated[str, Path(min_length=1, max_length=128, description="sandbox ID or name")]


class VolumeRequest(_Model):
    model_config = ConfigDict(extra="forbid")  # ours: a typo is a 400, not ignored
    name: str = Field(min_length=1, max_length=63)
    size_mb: int | None = Field(None, ge=1, description="default 1024")


class VersionRequest(_Model):
    model_config = ConfigDict(extra="forbid")  # ours: a typo is a 400, not ignored
    message: str = Field("", max_length=1024)


class ForkRequest(_Model):
    model_config = ConfigDict(extra="forbid")  # ours: a typo is a 400, not ignored
    name: str = Field(min_length=1, max_length=63)
    snapshot_id: str | None = Field(None, min_length=1, max_length=128, description="fork this version (default: head)")
    size_mb: int | None = Field(None, ge=1, description="default: the origin's")


class DetachRequest(_Model):
    model_config = ConfigDict(extra="forbid")  # ours: a typo is a 400, not ignored
    mount_path: str = Field(min_length=1, max_length=4096)


def _volumes(request: Request) -> VolumeManager:
    return request.app.state.service.manager.volumes  # type: ignore[no-any-return]


def _ns(request: Request) -> str:
    project = request.scope.get("state", {}).get("project")
    return project or request.path_params.get("namespace", "default")  # type: ignore[no-any-return]


def _limit(request: Request, namespace: str) -> int | None:
    """The project's ``volume_bytes`` quota (the door's), if any."""
    door = request.app.state.door
    if door is None:
        return None
    value = door.store.get_quota(namespace).get("volume_bytes")
    return int(value) if value is not None else None


def _info(vols: VolumeManager, rec: VolumeRecord, used: int | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": rec.id, "name": rec.name, "namespace": rec.namespace, "status": "ready",
        "size_mb": rec.size_mb, "created_at": rec.created_at, "forked_from": rec.forked_from,
        "mounts": [{"sandbox_id": s.id, "mount_path": m["mount_path"], "read_only": m["read_only"],
                    "snapshot_id": m.get("version_id")} for s, m in vols.holders(rec.id)],
    }
    if used is not None:
        info["used_bytes"] = used
    return info


def _version(ver: VersionRecord) -> dict[str, Any]:
    return {"snapshot_id": ver.id, "volume_id": ver.volume_id, "message": ver.message, "created_at": ver.created_at}


async def create_volume(request: Request, body: Annotated[VolumeRequest, Body()]) -> JSONResponse:
    vols, ns = _volumes(request), _ns(request)
    rec = await vols.create(ns, body.name, body.size_mb, limit_bytes=_limit(request, ns))
    return JSONResponse(_info(vols, rec), status_code=201)


async def list_volumes(request: Request) -> JSONResponse:
    vols = _volumes(request)
    return JSONResponse({"volumes": [_info(vols, v) for v in vols.list(_ns(request))]})


async def get_volume(request: Request, volume: VolumeRef) -> JSONResponse:
    vols = _volumes(request)
    rec = vols.get(_ns(request), volume)
    return JSONResponse(_info(vols, rec, await vols.used_bytes(rec)))


async def delete_volume(request: Request, volume: VolumeRef) -> JSONResponse:
    await _volumes(request).delete(_ns(request), volume)
    return JSONResponse({})


async def snapshot_volume(request: Request, volume: VolumeRef,
                          body: Annotated[VersionRequest | None, Body()] = None) -> JSONResponse:
    ver = await _volumes(request).snapshot(_ns(request), volume, body.message if body else "")
    return JSONResponse(_version(ver), status_code=201)


async def list_versions(request: Request, volume: VolumeRef) -> JSONResponse:
    return JSONResponse({"snapshots": [_version(v) for v in _volumes(request).versions(_ns(request), volume)]})


async def delete_version(request: Request, volume: VolumeRef, snapshot_id: VersionRef) -> JSONResponse:
    await _volumes(request).delete_version(_ns(request), volume, snapshot_id)
    return JSONResponse({})


async def fork_volume(request: Request, volume: VolumeRef, body: Annotated[ForkRequest, Body()]) -> JSONResponse:
    vols, ns = _volumes(request), _ns(request)
    rec = await vols.fork(ns, volume, body.name, body.snapshot_id, body.size_mb, limit_bytes=_limit(request, ns))
    return JSONResponse(_info(vols, rec), status_code=201)


async def attach_file_system(request: Request, sandbox_id: SandboxRef,
                             body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Tensorlake's ``attach_file_system``: a ``FileSystemMount`` body; the mount is
    in place when this answers (Tensorlake's completes later: the SDK copes with both)."""
    svc, vols = request.app.state.service, _volumes(request)
    spec = volume_mounts.parse(body, "body")[0]
    rec = svc.get(sandbox_id, _ns(request))
    await svc.created(rec.id)  # a create still finishing would write its copy of the record over ours
    rec = await vols.attach(rec, spec)
    return JSONResponse(render.sandbox_info(rec, public_urls.of(svc)))


async def detach_file_system(request: Request, sandbox_id: SandboxRef,
                             body: Annotated[DetachRequest, Body()]) -> JSONResponse:
    svc, vols = request.app.state.service, _volumes(request)
    path = body.mount_path
    if not path.startswith("/"):
        raise InvalidRequest("mount_path: must be absolute")
    rec = svc.get(sandbox_id, _ns(request))
    await svc.created(rec.id)
    rec = await vols.detach(rec, path)
    return JSONResponse(render.sandbox_info(rec, public_urls.of(svc)))


ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/volumes", create_volume),
    ("GET", "/volumes", list_volumes),
    ("GET", "/volumes/{volume}", get_volume),
    ("DELETE", "/volumes/{volume}", delete_volume),
    ("POST", "/volumes/{volume}/snapshots", snapshot_volume),
    ("GET", "/volumes/{volume}/snapshots", list_versions),
    ("DELETE", "/volumes/{volume}/snapshots/{snapshot_id}", delete_version),
    ("POST", "/volumes/{volume}/fork", fork_volume),
    ("POST", "/sandboxes/{sandbox_id}/file_systems", attach_file_system),
    ("DELETE", "/sandboxes/{sandbox_id}/file_systems", detach_file_system),
]
