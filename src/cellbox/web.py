"""The lifecycle port's whole app: the API, plus the web console at ``/ui`` and ``/metrics``.

Composed here, not in ``api/app.py``, because the console builds on the API's request
models (one validation for both doors): ``ui`` imports ``api``, so ``api`` must not
import ``ui``. The server serves ``create_web_app``; tests of the API alone keep using
``api.create_app``.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .api import create_app
from .auth.door import Door
from .manager.service import SandboxService
from .metrics import MetricsApp
from .ui import create_ui


class SideDoors:
    """Sends ``/ui`` to the web console (session cookies, ``ui/security.py``) and
    ``/metrics`` to the Prometheus endpoint (admin key), ahead of the API's key gate;
    everything else goes on to the API."""

    def __init__(self, api: ASGIApp, ui: ASGIApp, metrics: ASGIApp) -> None:
        self.api, self.ui, self.metrics = api, ui, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if path == "/ui" or path.startswith("/ui/"):
            await self.ui(scope, receive, send)
        elif path == "/metrics" and scope["type"] == "http":
            await self.metrics(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_web_app(service: SandboxService, door: Door, e2b_rest: Any = None, pools: Any = None) -> ASGIApp:
    return SideDoors(create_app(service, door, e2b_rest, pools), create_ui(service, door), MetricsApp(service, door))
