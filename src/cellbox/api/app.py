"""The lifecycle API as an ASGI app: routes mounted twice, errors mapped, bodies capped.

The app holds no state of its own: ``create_app(service)`` gets the service the server
started (``cellbox.server``), which owns the manager, its start/stop and reconcile.
Any ``Host`` is accepted (spec §1.3); every request but ``/health`` needs an API key
(``api/auth.py``), unless the app is made with ``door=None`` (unit tests, the
auth-off half of ``bench/auth.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth.door import Door
from ..manager.service import SandboxService
from ..logs.service import LogService
from ..pools.service import PoolService
from . import door as door_routes
from . import images as image_routes
from . import errors
from .auth import AuthGate
from .cas_builds import Builds
from .image_service import UPLOAD_PREFIX
from .image_service import router as image_service_router
from .tl_cloud import router as tl_cloud_router
from .images import BUILD_PATH_SUFFIX
from .logs import HostLogs
from .routes import router

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # 1 MiB: far above any lifecycle request
SLOW_REQUEST = 5.0  # seconds; slower requests are logged
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def _namespace_param(
    namespace: Annotated[str, Path(pattern=NAMESPACE_PATTERN, description="namespace (flat paths: default)")],
) -> None:
    """Declares and validates ``{namespace}``; handlers read it from the path."""


def create_app(service: SandboxService, door: Door | None, e2b: Any = None,
               pools: PoolService | None = None) -> FastAPI:
    app = FastAPI(
        title="cellbox lifecycle API",
        version="1",
        description="Tensorlake-compatible sandbox lifecycle API (see docs/api.md).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.door = door
    # Sandbox pools (issue 14); the server passes the one it starts and stops.
    app.state.pools = pools if pools is not None or service is None else PoolService(service)
    # Logs kept past a sandbox's end (issue 14); a stand-in service (unit tests) has none.
    app.state.logs = LogService(service) if isinstance(service, SandboxService) else None
    app.state.log_source = HostLogs(service, app.state.logs)  # api/logs.py; cluster mode sets its own
    app.state.cas_builds = Builds()  # Tensorlake's Image Service view (api/image_service.py)
    errors.install(app)
    # First: its /images/v4/... paths would otherwise be image names of GET /images/{name}.
    app.include_router(image_service_router(), generate_unique_id_function=lambda r: f"cas_{r.name}")
    app.include_router(tl_cloud_router(), generate_unique_id_function=_flat_id)
    routes = router()
    app.include_router(
        routes,
        prefix="/v1/namespaces/{namespace}",
        dependencies=[Depends(_namespace_param)],
        generate_unique_id_function=lambda route: f"ns_{route.name}",
    )
    app.include_router(routes, generate_unique_id_function=_flat_id)
    app.include_router(router(door_routes.FLAT_ROUTES), generate_unique_id_function=_flat_id)
    app.include_router(router(image_routes.PLATFORM_ROUTES), generate_unique_id_function=_platform_id)
    if e2b is not None:  # E2B's REST view under /e2b (cellbox/e2b/rest.py; e2b is its E2BRest)
        from ..e2b import rest as e2b_rest, rest_more as e2b_more

        app.state.e2b = e2b
        app.include_router(e2b_rest.router(), generate_unique_id_function=_flat_id)
        app.include_router(e2b_more.router(), generate_unique_id_function=_flat_id)  # last: its catch-all
    app.add_middleware(BodyGuard, max_bytes=MAX_BODY)
    if door is not None:
        app.add_middleware(AuthGate, authenticator=door.auth, audit=door.audit)  # added last: runs first
    return app


def _flat_id(route: APIRoute) -> str:
    return route.name


def _platform_id(route: APIRoute) -> str:
    return f"platform_{route.name}"


class BodyGuard:
    """Every body is JSON here, and small (and slow requests are logged).

    * Except image builds, whose body is a tar of the build context.
    * Bodies are parsed as JSON whatever ``Content-Type`` says (``curl -d`` sends
      ``application/x-www-form-urlencoded``); the header is rewritten for the framework.
    * Bodies over ``max_bytes`` are refused with 413: by ``Content-Length`` before
      reading, and while reading for chunked bodies (raised as an HTTP error, which the
      framework's body parsing passes through untouched).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (scope["method"] == "POST" and scope["path"].endswith(BUILD_PATH_SUFFIX)) or (
                scope["method"] == "PUT" and scope["path"].startswith(UPLOAD_PREFIX)):
            # A build's body is the context archive (api/images.py, api/image_service.py cap and check it).
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await errors.payload_too_large(self.max_bytes)(scope, receive, send)
                return
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise errors.PayloadTooLarge(self.max_bytes)
            return message

        started = time.monotonic()
        try:
            await self.app(scope, limited, send)
        finally:
            if (took := time.monotonic() - started) > SLOW_REQUEST:
                log.warning("slow request: %s %s took %.1fs", scope["method"], scope["path"], took)
