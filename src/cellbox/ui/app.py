"""The web console as an ASGI app, served by the API's own server under ``/ui``.

``create_ui`` builds a Starlette app (no FastAPI: these routes answer HTML, not a
schema) behind ``security.Gate``. ``api/app.py`` sends it every ``/ui`` request ahead
of the API's key gate, which would otherwise demand a Bearer header a browser
cannot send on page loads or WebSockets.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from ..auth.door import Door
from ..errors import CellboxError
from ..manager.service import SandboxService
from . import actions, files, images, live, login, pages, processes, static, terminal
from .context import error_page
from .security import Gate
from .sessions import Sessions


async def _home(request: Request) -> Response:
    return RedirectResponse("/ui/sandboxes", status_code=303)


def routes() -> list[BaseRoute]:
    # Order matters: fixed paths (events, rows, files, pty) before the catch-alls
    # /ui/sandboxes/{id} (GET) and /ui/sandboxes/{id}/{action} (POST).
    return [Route("/ui", _home), Route("/ui/", _home), *login.ROUTES, *live.ROUTES, *files.ROUTES,
            *terminal.ROUTES, *processes.ROUTES, *images.ROUTES, *pages.ROUTES, *actions.ROUTES, *static.ROUTES]


def create_ui(service: SandboxService, door: Door) -> ASGIApp:
    app = Starlette(routes=routes(), exception_handlers={CellboxError: error_page})
    app.state.service = service
    app.state.door = door
    app.state.sessions = Sessions(door.store)
    app.state.terminals = terminal.Terminals()
    app.state.image_jobs = {}  # ui/images.py
    return Gate(app, app.state.sessions)
