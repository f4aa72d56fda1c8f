"""The control plane's HTTP API: a compact subset of the single-host routes
(create, get, list, delete, suspend, resume), same keys and same error shape.

More routes, and a 501 for every single-host route still not served here, are added
by ``api_wide.install`` (server_main.py calls it on this app).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..api.auth import AuthGate
from ..api.errors import error_response
from ..auth.door import Door
from ..errors import CellboxError, InvalidRequest
from .control import ControlPlane
from .records import ClusterSandbox

MAX_BODY = 64 << 10


def _wire(sb: ClusterSandbox, proxy_url: str) -> dict[str, Any]:
    out = asdict(sb)
    out.pop("local_id")
    out["status"] = out.pop("state")
    out["sandbox_url"] = proxy_url
    return out


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidRequest(f"body over {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise InvalidRequest("body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    return body


def create_cluster_app(control: ControlPlane, door: Door, proxy_url: str) -> FastAPI:
    app = FastAPI(title="cellbox cluster", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(CellboxError)
    async def _error(_: Request, exc: CellboxError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers or None)

    def project(request: Request) -> str:
        return request.scope["state"]["project"]

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # The database restarted or is out of reach: nothing was half-done (every
        # change is one transaction); the client retries.
        return error_response(503, "DATABASE_UNAVAILABLE", "the cluster database is unavailable; retry",
                              {"Retry-After": "1"})

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/sandboxes", status_code=201)
    async def create(request: Request) -> dict[str, Any]:
        return _wire(await control.create(project(request), await _body(request)), proxy_url)

    @app.get("/sandboxes")
    async def list_(request: Request) -> dict[str, Any]:
        return {"sandboxes": [_wire(s, proxy_url) for s in await control.list(project(request))]}

    @app.get("/sandboxes/{ref}")
    async def get(ref: str, request: Request) -> dict[str, Any]:
        return _wire(await control.get(project(request), ref), proxy_url)

    @app.delete("/sandboxes/{ref}")
    async def delete(ref: str, request: Request) -> dict[str, Any]:
        return _wire(await control.delete(project(request), ref), proxy_url)

    @app.post("/sandboxes/{ref}/suspend")
    async def suspend(ref: str, request: Request) -> dict[str, Any]:
        return _wire(await control.suspend(project(request), ref), proxy_url)

    @app.post("/sandboxes/{ref}/resume")
    async def resume(ref: str, request: Request) -> dict[str, Any]:
        return _wire(await control.resume(project(request), ref), proxy_url)

    app.add_middleware(AuthGate, authenticator=door.auth, audit=door.audit)
    return app
