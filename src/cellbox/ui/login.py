"""Login and logout: an API key in, a session cookie out.

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no cross-site
request carries it), ``Path=/ui`` (the API never sees it: it takes Bearer keys only)
and ``Secure`` when the server speaks TLS. A wrong key gets the guard's own message
(401), the same for unknown and wrong keys.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..errors import Unauthorized
from .context import door_of, render, sessions_of
from .forms import one, read_form
from .security import cookie_value
from .sessions import COOKIE, IDLE_TIMEOUT


async def login_page(request: Request) -> Response:
    if sessions_of(request).check(cookie_value(request.scope)) is not None:
        return RedirectResponse("/ui/sandboxes", status_code=303)
    return render(request, "login.html")


async def login(request: Request) -> Response:
    form = await read_form(request)
    key = one(form, "api_key")
    try:
        principal = door_of(request).auth.authenticate(f"Bearer {key}" if key else None)
    except Unauthorized as exc:
        return render(request, "login.html", status_code=401, error=exc.message)
    session = sessions_of(request).open(principal)
    resp = RedirectResponse("/ui/sandboxes", status_code=303)
    resp.set_cookie(COOKIE, session.sid, max_age=int(IDLE_TIMEOUT), path="/ui", httponly=True, samesite="strict",
                    secure=request.url.scheme == "https")
    door_of(request).store.audit(key_id=principal.key_id, project=principal.project, action="POST /ui/login",
                                 obj="/ui/login", status=303, client=request.client.host if request.client else None)
    return resp


async def logout(request: Request) -> Response:
    sessions_of(request).close(cookie_value(request.scope))
    resp = Response(status_code=204, headers={"HX-Redirect": "/ui/login"})
    resp.delete_cookie(COOKIE, path="/ui")
    return resp


ROUTES = [
    Route("/ui/login", login_page, methods=["GET"]),
    Route("/ui/login", login, methods=["POST"]),
    Route("/ui/logout", logout, methods=["POST"]),
]
