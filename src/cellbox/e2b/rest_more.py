"""E2B's fork and snapshot calls on our clone and snapshot, and a clear 501 for the rest.

* ``POST /sandboxes/{id}/fork`` {count, timeout} -> ``service.copy`` (a CRIU clone: files
  and running processes), one result per copy, an error entry for a copy that failed;
* ``POST /sandboxes/{id}/snapshots`` {memory} -> ``service.snapshot`` (memory or
  filesystem); the snapshot ID is then a template: ``Sandbox.create(template=ID)``
  starts from it (rest.create);
* ``GET /snapshots`` and ``DELETE /templates/{id}`` (E2B deletes snapshots there);
* anything else under ``/e2b`` (volumes, template builds, metrics,
  secrets, …) is 501 naming the call, never a 404 the SDK would read as "sandbox not found".
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..errors import CellboxError, InvalidRequest
from .manager_api import SandboxRecord, SnapshotRecord, SnapshotType
from . import records, render
from .rest import PREFIX, _body, _e2b_errors, _err, _live, _project, _svc, _timeout, _view

MAX_FORKS = 16


def _snapshot(s: SnapshotRecord) -> dict[str, Any]:
    return {"snapshotID": s.id, "names": [s.id]}


@_e2b_errors
async def fork(request: Request, sandbox_id: str) -> Response:
    doc = await _body(request)
    count = doc.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_FORKS:
        raise InvalidRequest(f"count: 1..{MAX_FORKS}")
    timeout = _timeout(doc)
    src = _live(request, sandbox_id)
    svc = _svc(request)
    _, copies = await svc.copy(src.id, _project(request), count)
    out: list[dict[str, Any]] = []
    for c in copies:
        if isinstance(c, SandboxRecord):
            extra = {k: src.extra[k] for k in (render.META_KEY, render.TEMPLATE_KEY, records.ENV_KEY) if k in src.extra}
            c = records.set_extra(svc, c, extra)
            if timeout:
                c = records.set_timeout(svc, c, timeout)
            out.append({"sandbox": _view(request).sandbox(c)})
        else:
            err = c if isinstance(c, CellboxError) else CellboxError(str(c))
            out.append({"error": {"code": err.status, "message": f"{err.code}: {err.message}"}})
    return JSONResponse(out, status_code=201)


@_e2b_errors
async def create_snapshot(request: Request, sandbox_id: str) -> Response:
    doc = await _body(request)
    if doc.get("name"):  # our snapshots have IDs only: say so rather than drop the name
        raise InvalidRequest("name: named snapshots are not supported by cellbox; use the returned snapshotID")
    kind = SnapshotType.FILESYSTEM if doc.get("memory") is False else SnapshotType.MEMORY
    rec = _live(request, sandbox_id)
    snap = await _svc(request).snapshot(rec.id, _project(request), kind)
    return JSONResponse(_snapshot(snap), status_code=201)


@_e2b_errors
async def list_snapshots(request: Request) -> Response:
    sandbox = request.query_params.get("sandboxID")
    snaps = _svc(request).list_snapshots(_project(request), sandbox)
    return JSONResponse([_snapshot(s) for s in snaps])


@_e2b_errors
async def delete_snapshot(request: Request, template_id: str) -> Response:
    await _svc(request).delete_snapshot(template_id, _project(request))
    return Response(status_code=204)


async def not_served(request: Request, rest: str) -> Response:
    return _err(501, f"cellbox does not serve E2B's {request.method} /{rest} (not supported; "
                     "see docs/compat-e2b.md)")


def router() -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)
    r.add_api_route("/sandboxes/{sandbox_id}/fork", fork, methods=["POST"], name="e2b_fork")
    r.add_api_route("/sandboxes/{sandbox_id}/snapshots", create_snapshot, methods=["POST"], name="e2b_snapshot")
    r.add_api_route("/snapshots", list_snapshots, methods=["GET"], name="e2b_snapshots")
    r.add_api_route("/templates/{template_id}", delete_snapshot, methods=["DELETE"], name="e2b_delete_snapshot")
    r.add_api_route("/{rest:path}", not_served, methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                    name="e2b_not_served")
    return r
