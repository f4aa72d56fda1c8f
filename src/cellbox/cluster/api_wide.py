"""The cluster API beyond create/get/list/delete/suspend/resume (``api.py``): the door's
routes on PostgreSQL, the wider Tensorlake surface, and a clear 501 for the rest.

Every route of the single-host server (``api/routes.py``'s table, the door's and the
platform's) that a replica does not serve answers ``501 NOT_IN_CLUSTER_MODE`` naming
the method and path, flat and under ``/v1/namespaces/{ns}``: a client learns at once
what is missing instead of a 404 that reads like a wrong ID, and the list in
docs/cluster.md is this table's complement (``tests/cluster/test_keys_api.py`` walks it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Route

from ..api import door as door_routes
from ..api import errors as api_errors
from ..api import images as image_routes
from ..api import logs as log_routes
from ..api import routes as single_host
from ..auth.door import Door
from ..errors import CellboxError
from . import clusterdoor, control_wide, node_reads
from .control import ControlPlane

NAMESPACED = "/v1/namespaces/{namespace}"


class NotInClusterMode(CellboxError):
    """A single-host route a control-plane replica does not serve yet (501)."""

    status = 501
    code = "NOT_IN_CLUSTER_MODE"

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"{method} {path} is not served in cluster mode yet (docs/cluster.md lists what is)")


def single_host_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the single-host server serves: its table flat and
    under the namespace prefix, the door's and the platform's flat only (``api/app.py``)."""
    out = {(m, p) for m, p, _ in single_host.ROUTES} | {(m, NAMESPACED + p) for m, p, _ in single_host.ROUTES}
    out |= {(m, p) for table in (door_routes.FLAT_ROUTES, image_routes.PLATFORM_ROUTES) for m, p, _ in table}
    return sorted(out)


def _served(app: FastAPI) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            out |= {(m, _shape(route.path)) for m in route.methods}
    return out


def _shape(path: str) -> str:
    """A path with its parameter names erased: ``/sandboxes/{ref}`` = ``/sandboxes/{sandbox_id}``."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _refuse(method: str, path: str) -> Callable[[Request], Any]:
    async def not_served(request: Request) -> None:
        raise NotInClusterMode(method, path)
    return not_served


def unserved(app: FastAPI) -> list[tuple[str, str]]:
    """The single-host routes ``app`` does not serve."""
    served = _served(app)
    return [(m, p) for m, p in single_host_routes() if (m, _shape(p)) not in served]


def _namespaced(app: FastAPI) -> None:
    """Each served sandbox route also under ``/v1/namespaces/{ns}`` (the SDK's localhost
    form): the gate puts that namespace, checked against the key, in the request's state."""
    flat_only = {p for table in (door_routes.FLAT_ROUTES, image_routes.PLATFORM_ROUTES) for _, p, _ in table}
    for route in [r for r in app.routes if isinstance(r, APIRoute)]:
        if route.path not in flat_only and route.path != "/health" and not route.path.startswith(NAMESPACED):
            app.add_api_route(NAMESPACED + route.path, route.endpoint, methods=list(route.methods),
                              status_code=route.status_code, include_in_schema=False)


def _routes(app: FastAPI, control: ControlPlane, proxy_url: str) -> None:
    """Snapshots, create-from-snapshot (``POST /sandboxes`` with ``snapshot_id``, in
    control.py), copies, PATCH of the network policy, images (control_wide.py)."""
    from ..api.models import SnapshotRequest
    from .api import _body, _wire

    def project(request: Request) -> str:
        return request.scope["state"]["project"]  # type: ignore[no-any-return]

    async def snapshot(ref: str, request: Request) -> dict[str, Any]:
        body = control_wide.validated(SnapshotRequest, await _body(request))
        row = await control_wide.snapshot(control, project(request), ref, body.kind())
        return {"snapshot_id": row["id"], "status": "completed"}

    async def list_snapshots(request: Request) -> dict[str, Any]:
        return {"snapshots": [control_wide.snapshot_wire(r) for r in
                              await control_wide.list_snapshots(control, project(request))]}

    async def sandbox_snapshots(ref: str, request: Request) -> dict[str, Any]:
        sb = await control.get(project(request), ref)
        return {"snapshots": [control_wide.snapshot_wire(r) for r in
                              await control_wide.list_snapshots(control, project(request), sb.id)]}

    async def get_snapshot(sid: str, request: Request) -> dict[str, Any]:
        return control_wide.snapshot_wire(await control_wide.get_snapshot(control, project(request), sid))

    async def delete_snapshot(sid: str, request: Request) -> dict[str, Any]:
        await control_wide.delete_snapshot(control, project(request), sid)
        return {}

    async def copy(ref: str, request: Request, times: int = 1) -> JSONResponse:
        source, made = await control_wide.copy(control, project(request), ref, times)
        entries = [_wire(m, proxy_url) if not isinstance(m, CellboxError) else
                   {"id": "", "status": "failed", "reason": m.code, "error_details": {"message": m.message}}
                   for m in made]
        failed = any(e["status"] != "running" for e in entries)
        return JSONResponse({"source_sandbox_id": source.id, "sandboxes": entries}, status_code=422 if failed else 200)

    async def update(ref: str, request: Request) -> dict[str, Any]:
        return _wire(await control_wide.update(control, project(request), ref, await _body(request)), proxy_url)

    async def images(request: Request) -> dict[str, Any]:
        return {"images": await control_wide.images(control)}

    for method, path, handler in [
        ("POST", "/sandboxes/{ref}/snapshot", snapshot), ("GET", "/snapshots", list_snapshots),
        ("GET", "/snapshots/{sid}", get_snapshot), ("DELETE", "/snapshots/{sid}", delete_snapshot),
        ("GET", "/sandboxes/{ref}/snapshots", sandbox_snapshots), ("POST", "/sandboxes/{ref}/copy", copy),
        ("PATCH", "/sandboxes/{ref}", update), ("GET", "/images", images),
    ]:
        app.add_api_route(path, handler, methods=[method])


def install(app: FastAPI, door: Door, control: ControlPlane, proxy_url: str, key: bytes) -> None:
    """Error shapes, the door's routes, the wider API, the namespaced forms, then a 501
    for every single-host route still missing."""
    api_errors.install(app)
    clusterdoor.mount(app, door)
    _routes(app, control, proxy_url)
    # Logs: the single-host handlers, reading from the sandbox's node (node_reads.py).
    app.state.log_source = node_reads.NodeLogs(control, key)
    for method, path, handler in log_routes.ROUTES:
        app.add_api_route(path, handler, methods=[method])
    _namespaced(app)
    for method, path in unserved(app):
        app.add_api_route(path, _refuse(method, path), methods=[method], include_in_schema=False)
