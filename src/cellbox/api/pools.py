"""Tensorlake's ``sandbox-pools`` routes (spec §2 rows 16-21, §2.8): thin handlers over
``pools.service.PoolService``; bodies validated here before any side effect."""

from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import Body, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from ..errors import InvalidRequest
from ..pools.service import EXECUTOR, PoolService, new_pool_id
from ..pools.store import PoolRecord
from . import image_access, public_urls, render
from .params import budget as _budget, namespace as _namespace
from .models import MAX_INT, NetworkConfig, Resources, _Model

PoolRef = Annotated[str, Path(min_length=1, max_length=128, description="pool ID")]


class PoolRequest(_Model):
    image: str = Field(min_length=1, max_length=512)
    resources: Resources = Field(default_factory=Resources)
    timeout_secs: int = Field(0, ge=0, le=MAX_INT)
    entrypoint: list[str] | None = Field(None, max_length=1024)
    max_containers: int | None = Field(None, ge=0, le=10_000)
    warm_containers: int | None = Field(None, ge=0, le=10_000)
    network: NetworkConfig | None = None

    def fields(self) -> dict[str, Any]:
        """The definition's fields (PUT: a full replace, but ``network`` absent = keep)."""
        res = self.resources
        if res.gpus:
            raise InvalidRequest("resources.gpus: this host has no GPUs", code="NOT_SUPPORTED")
        if self.network is not None:
            self.network.to_policy()  # 400 naming a bad entry, before anything is stored
        out: dict[str, Any] = {
            "image": self.image, "cpus": float(res.cpus if res.cpus is not None else 1.0),
            "memory_mb": res.memory_mb if res.memory_mb is not None else 1024, "disk_mb": res.disk_mb,
            "timeout_secs": self.timeout_secs, "entrypoint": self.entrypoint,
            "max_containers": self.max_containers, "warm_containers": self.warm_containers or 0,
        }
        if "network" in self.model_fields_set:
            out["network"] = self.network.model_dump() if self.network is not None else None
        return out


def _pools(request: Request) -> PoolService:
    return request.app.state.pools  # type: ignore[no-any-return]


def pool_info(pools: PoolService, rec: PoolRecord, *, containers: bool = True) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": rec.id, "namespace": rec.namespace, "image": rec.image,
        "resources": {"cpus": rec.cpus, "memory_mb": rec.memory_mb, "disk_mb": rec.disk_mb or 0},
        "timeout_secs": rec.timeout_secs, "entrypoint": rec.entrypoint, "max_containers": rec.max_containers,
        "warm_containers": rec.warm_containers, "network_policy": rec.network,
        "created_at": rec.created_at, "updated_at": rec.updated_at,
    }
    if containers:
        idle = [{"id": f"{rec.id}-warm-{i}", "state": "Idle", "sandbox_id": None, "executor_id": EXECUTOR}
                for i in range(pools.idle(rec.id))]
        busy = [{"id": s.id, "state": "Running", "sandbox_id": s.id, "executor_id": EXECUTOR}
                for s in pools.claimed(rec)]
        info["containers"] = idle + busy
    return info


async def create_pool(request: Request, body: Annotated[PoolRequest, Body()]) -> JSONResponse:
    image_access.check_visible(request, body.image)  # door: another project's image is a 404
    ns = _namespace(request)
    fields = body.fields()
    rec = await _pools(request).create(PoolRecord(id=new_pool_id(), namespace=ns, **fields))
    return JSONResponse({"pool_id": rec.id, "namespace": rec.namespace})


async def list_pools(request: Request) -> JSONResponse:
    pools = _pools(request)
    return JSONResponse({"pools": [pool_info(pools, r, containers=False) for r in pools.list(_namespace(request))]})


async def get_pool(request: Request, pool_id: PoolRef) -> JSONResponse:
    pools = _pools(request)
    return JSONResponse(pool_info(pools, pools.get(pool_id, _namespace(request))))


async def update_pool(request: Request, pool_id: PoolRef, body: Annotated[PoolRequest, Body()]) -> JSONResponse:
    image_access.check_visible(request, body.image)
    pools = _pools(request)
    rec = await pools.update(pool_id, _namespace(request), body.fields())
    return JSONResponse(pool_info(pools, rec, containers=False))


async def delete_pool(request: Request, pool_id: PoolRef) -> JSONResponse:
    await _pools(request).delete(pool_id, _namespace(request))
    return JSONResponse({})


async def claim_sandbox(
    request: Request, pool_id: PoolRef,
    timeout_ms: Annotated[str | None, Header(alias="X-Tensorlake-Request-Timeout-Ms")] = None,
    grace_ms: Annotated[str | None, Header(alias="X-Tensorlake-Request-Timeout-Grace-Ms")] = None,
) -> JSONResponse:
    """A running sandbox of the pool. A body naming ``file_systems`` is refused (400):
    cellbox has no attached file systems here, and the SDK deletes a claim whose answer
    lacks ``claim_configuration_applied`` anyway."""
    _pools(request).get(pool_id, _namespace(request))  # another project's pool: 404 first
    raw = (await request.body()).strip()
    if raw and raw not in (b"{}", b"null"):
        raise InvalidRequest("body: a claim takes no configuration here (file_systems are not supported)",
                             code="NOT_SUPPORTED")
    svc = request.app.state.service
    rec = await _pools(request).claim(pool_id, _namespace(request), _budget(timeout_ms, grace_ms))
    return JSONResponse(render.create_response(rec, public_urls.of(svc)))


ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("POST", "/sandbox-pools", create_pool),
    ("GET", "/sandbox-pools", list_pools),
    ("GET", "/sandbox-pools/{pool_id}", get_pool),
    ("PUT", "/sandbox-pools/{pool_id}", update_pool),
    ("DELETE", "/sandbox-pools/{pool_id}", delete_pool),
    ("POST", "/sandbox-pools/{pool_id}/sandboxes", claim_sandbox),
]
