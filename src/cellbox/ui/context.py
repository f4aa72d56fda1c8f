"""What every console handler needs: its session, project, service, and a renderer.

Handlers raise ``cellbox.errors`` like the API's do; ``error_page`` turns them into an
HTML answer with the error's own status (another project's sandbox is the same 404 as
a missing one, never a 403), and htmx swaps the message into the page's flash area.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.templating import Jinja2Templates

from ..auth.door import Door
from ..errors import CellboxError, Forbidden
from ..manager.service import SandboxService
from .sessions import Session, Sessions

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))  # autoescapes .html


def _age(ms: int | None) -> str:
    if not ms:
        return "-"
    s = max(0, int(time.time() - ms / 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


TEMPLATES.env.filters["age"] = _age
TEMPLATES.env.filters["size"] = _size


def session_of(request: Request) -> Session:
    return request.scope["state"]["session"]  # type: ignore[no-any-return]


def project_of(request: Request) -> str:
    return session_of(request).principal.project


def service_of(request: Request) -> SandboxService:
    return request.app.state.service  # type: ignore[no-any-return]


def door_of(request: Request) -> Door:
    return request.app.state.door  # type: ignore[no-any-return]


def sessions_of(request: Request) -> Sessions:
    return request.app.state.sessions  # type: ignore[no-any-return]


def require_admin(request: Request) -> None:
    if not session_of(request).principal.is_admin:
        raise Forbidden("this page needs an admin key", code="ADMIN_REQUIRED")


def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    session = request.scope.get("state", {}).get("session")
    return TEMPLATES.TemplateResponse(request, name, {"session": session, **ctx}, status_code=status_code)


POLLED = frozenset({"processes", "logs"})  # ids of page parts htmx refreshes on a timer


def error_page(request: Request, exc: Exception) -> Response:
    """A CellboxError as HTML: a fragment for htmx calls, a whole page otherwise."""
    assert isinstance(exc, CellboxError)
    if request.headers.get("hx-request"):
        body = f'<p class="error" role="alert">{_escape(exc.message)}</p>'
        target = request.headers.get("hx-trigger") or ""  # the id of the element that asked
        if target in POLLED or target.startswith("output-"):  # shown where it polls, not flashed every tick
            return HTMLResponse(body, status_code=exc.status)
        return HTMLResponse(body, status_code=exc.status, headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
    return render(request, "error.html", status_code=exc.status, error=exc)


def _escape(text: str) -> str:
    from markupsafe import escape
    return str(escape(text))
