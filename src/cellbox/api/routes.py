"""The lifecycle routes: one table, thin handlers (parse → service → render).

Each route is served twice (``api/app.py``): under ``/v1/namespaces/{namespace}``
(what the SDK uses against localhost) and flat, for namespace ``default`` (what it
uses with ``TENSORLAKE_SANDBOX_API_URL``). ``{sandbox_id}`` accepts an ID or a name.
Handlers never choose error codes: they raise ``cellbox.errors`` (``api/errors.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from ..errors import InvalidRequest
from ..manager.records import SandboxRecord, Status
from ..manager.service import SandboxService
from ..manager.snapshot_store import SnapshotType
from . import door as door_routes
from . import image_access
from . import public_urls
from .public_urls import PublicUrls
from . import images as image_routes
from . import archived as archived_routes
from . import logs as log_routes
from . import pools as pool_routes
from . import render
from .params import budget as _budget, namespace as _namespace
from . import volumes as volume_routes
from .models import CreateSandboxRequest, SnapshotRequest, UpdateSandboxRequest

WIRE_STATUSES = sorted({s.value for s in Status} | {"timeout"})
# One page holds everything a namespace normally has: the Tensorlake SDK reads only
# the first page of a list (it does not follow next_cursor).
MAX_PAGE = 1000
SandboxRef = Annotated[str, Path(min_length=1, max_length=128, description="sandbox ID or name")]


def _service(request: Request) -> SandboxService:
    return request.app.state.service  # type: ignore[no-any-return]


def _urls(svc: SandboxService) -> PublicUrls:
    return public_urls.of(svc)


async def create_sandbox(
    request: Request,
    body: Annotated[CreateSandboxRequest | None, Body()] = None,
    timeout_ms: Annotated[str | None, Header(alias="X-Tensorlake-Request-Timeout-Ms")] = None,
    grace_ms: Annotated[str | None, Header(alias="X-Tensorlake-Request-Timeout-Grace-Ms")] = None,
) -> JSONResponse:
    """Create a sandbox. Blocks until it runs (200) unless ``wait`` is false (202) or
    the client's time budget runs out (200 with ``status: pending``)."""
    body = await _optional_body(request, body, CreateSandboxRequest)
    if body.image:
        image_access.check_visible(request, body.image)  # another project's image: 404 (issue 12)
    svc = _service(request)
    rec = await svc.create(
        body.to_options(_namespace(request)), wait=body.wait, budget=_budget(timeout_ms, grace_ms)
    )
    return JSONResponse(render.create_response(rec, _urls(svc)), status_code=200 if body.wait else 202)


async def _optional_body(request: Request, body: Any, model: type[Any]) -> Any:
    """The parsed body, or the model's defaults when there was no body at all.

    FastAPI gives None both for an empty body and for a JSON ``null``; only the first
    means "all defaults": ``null`` is a client bug and must not create a sandbox.
    """
    if body is not None:
        return body
    if (await request.body()).strip():
        raise InvalidRequest("body: must be a JSON object (or empty), not null")
    return model()


async def list_sandboxes(
    request: Request,
    status: Annotated[
        str | None, Query(description="comma-separated statuses, or 'all'; default: every non-final status")
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
) -> JSONResponse:
    """The namespace's sandboxes, oldest first. By default only live ones (terminated
    and failed sandboxes are history: ask for them with ``status``)."""
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else []
    for s in statuses:
        if s not in WIRE_STATUSES and s != "all":
            raise InvalidRequest(f"status: unknown status {s!r}; one of all, {', '.join(WIRE_STATUSES)}")
    everything = "all" in statuses
    svc = _service(request)
    page = svc.list(
        _namespace(request), statuses=None if everything else statuses or None,
        live_only=not statuses, cursor=cursor, limit=limit,
    )
    return JSONResponse(render.sandbox_list(page, _urls(svc)))


async def get_sandbox(request: Request, sandbox_id: SandboxRef) -> JSONResponse:
    svc = _service(request)
    return JSONResponse(render.sandbox_info(svc.get(sandbox_id, _namespace(request)), _urls(svc)))


async def update_sandbox(
    request: Request, sandbox_id: SandboxRef, body: Annotated[UpdateSandboxRequest, Body()]
) -> JSONResponse:
    """Rename, replace ``exposed_ports``, set ``allow_unauthenticated_access`` / ``auto_resume``."""
    svc = _service(request)
    rec = await svc.update(sandbox_id, _namespace(request), body.to_changes())
    return JSONResponse(render.sandbox_info(rec, _urls(svc)))


async def delete_sandbox(request: Request, sandbox_id: SandboxRef) -> JSONResponse:
    """Terminate; idempotent. A pending sandbox is cancelled."""
    await _service(request).delete(sandbox_id, _namespace(request))
    return JSONResponse({})


# -- memory state (spec §2.5-§2.7) ----------------------------------------------------

WaitMs = Annotated[int | None, Query(ge=0, le=600_000, description="hold the request until settled, at most this long")]


def _settled_response(rec: SandboxRecord, settled: bool, svc: SandboxService) -> JSONResponse:
    """200 = the target state is reached; 202 = still on its way (the client polls)."""
    return JSONResponse(render.sandbox_info(rec, _urls(svc)), status_code=200 if settled else 202)


async def suspend_sandbox(request: Request, sandbox_id: SandboxRef, wait_ms: WaitMs = None) -> JSONResponse:
    """Suspend a named sandbox: memory and files to disk, no process or RAM left."""
    svc = _service(request)
    rec, settled = await svc.suspend(sandbox_id, _namespace(request), wait_s=_wait_s(wait_ms))
    return _settled_response(rec, settled, svc)


async def resume_sandbox(request: Request, sandbox_id: SandboxRef, wait_ms: WaitMs = None) -> JSONResponse:
    """Resume a suspended sandbox where it left off."""
    svc = _service(request)
    rec, settled = await svc.resume(sandbox_id, _namespace(request), wait_s=_wait_s(wait_ms))
    return _settled_response(rec, settled, svc)


def _wait_s(wait_ms: int | None) -> float:
    # No wait_ms: answer once the change has started (202), as the SDK's wait=False expects.
    return 0.0 if wait_ms is None else wait_ms / 1000


async def snapshot_sandbox(
    request: Request, sandbox_id: SandboxRef, body: Annotated[SnapshotRequest | None, Body()] = None
) -> JSONResponse:
    """Snapshot a running sandbox: its files, or files and memory from one instant."""
    body = await _optional_body(request, body, SnapshotRequest)
    snap = await _service(request).snapshot(sandbox_id, _namespace(request), SnapshotType(body.kind()))
    return JSONResponse({"snapshot_id": snap.id, "status": snap.status.value})


async def get_snapshot(request: Request, snapshot_id: Annotated[str, Path(min_length=1, max_length=128)]) -> JSONResponse:
    return JSONResponse(render.snapshot_info(_service(request).get_snapshot(snapshot_id, _namespace(request))))


async def list_snapshots(request: Request) -> JSONResponse:
    return JSONResponse(render.snapshot_list(_service(request).list_snapshots(_namespace(request))))


async def list_sandbox_snapshots(request: Request, sandbox_id: SandboxRef) -> JSONResponse:
    return JSONResponse(render.snapshot_list(_service(request).list_snapshots(_namespace(request), sandbox_id)))


async def delete_snapshot(request: Request, snapshot_id: Annotated[str, Path(min_length=1, max_length=128)]) -> JSONResponse:
    await _service(request).delete_snapshot(snapshot_id, _namespace(request))
    return JSONResponse({})


async def copy_sandbox(
    request: Request, sandbox_id: SandboxRef, times: Annotated[int, Query(ge=1, le=64)] = 1
) -> JSONResponse:
    """N live copies (files and memory) of a running sandbox; 422 if some failed."""
    svc = _service(request)
    source, copies = await svc.copy(sandbox_id, _namespace(request), times)
    failed = any(not isinstance(c, SandboxRecord) for c in copies)
    return JSONResponse(render.copy_response(source, copies, _urls(svc)), status_code=422 if failed else 200)


ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("POST", "/sandboxes", create_sandbox),
    ("GET", "/sandboxes", list_sandboxes),
    ("GET", "/sandboxes/{sandbox_id}", get_sandbox),
    ("PATCH", "/sandboxes/{sandbox_id}", update_sandbox),
    ("DELETE", "/sandboxes/{sandbox_id}", delete_sandbox),
    *log_routes.ROUTES,
    ("POST", "/sandboxes/{sandbox_id}/suspend", suspend_sandbox),
    ("POST", "/sandboxes/{sandbox_id}/resume", resume_sandbox),
    ("POST", "/sandboxes/{sandbox_id}/snapshot", snapshot_sandbox),
    ("GET", "/sandboxes/{sandbox_id}/snapshots", list_sandbox_snapshots),
    ("POST", "/sandboxes/{sandbox_id}/copy", copy_sandbox),
    ("GET", "/snapshots", list_snapshots),
    ("GET", "/snapshots/{snapshot_id}", get_snapshot),
    ("DELETE", "/snapshots/{snapshot_id}", delete_snapshot),
    *pool_routes.ROUTES,
    *archived_routes.ROUTES,
    *image_routes.ROUTES,
    *volume_routes.ROUTES,
    *door_routes.ROUTES,
]


def router(routes: list[tuple[str, str, Any]] = ROUTES) -> APIRouter:
    """An APIRouter serving a table of (method, path, endpoint) (ours, or the door's flat-only one)."""
    r = APIRouter()
    for method, path, endpoint in routes:
        r.add_api_route(path, endpoint, methods=[method], name=endpoint.__name__, response_class=JSONResponse)
    return r
