"""The console's gate: session cookie, CSRF, Origin, and the headers every page gets.

An ASGI middleware in front of every ``/ui`` route (like ``api/auth.py`` for the API),
so a route added later cannot forget a check:

* a request without a live session gets the login page (a 303 for page loads, a 401
  with ``HX-Redirect`` for htmx and fetch calls); only the login page and the static
  files are open;
* every state-changing request (not GET/HEAD/OPTIONS) must carry the session's CSRF
  token in ``X-CSRF-Token`` (htmx sends it from ``hx-headers`` on ``<body>``, our
  scripts from the ``<meta name="csrf-token">``), else 403; and a cross-site
  ``Origin`` is a 403 too, login included (SameSite=Strict already keeps the cookie
  off cross-site requests: this is the second wall);
* every WebSocket must come from our own origin (browsers do not apply CORS or
  SameSite rules to WebSocket handshakes consistently), else it is refused before
  it is accepted (uvicorn answers 403);
* every answer carries a CSP with ``script-src 'self'`` (no inline script anywhere,
  no CDN), ``frame-ancestors 'none'`` and ``nosniff``.
"""

from __future__ import annotations

import logging
from http.cookies import SimpleCookie
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .sessions import COOKIE, Sessions

log = logging.getLogger(__name__)
PREFIX = "/ui"
LOGIN = f"{PREFIX}/login"
OPEN_PATHS = (LOGIN, f"{PREFIX}/static/")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = b"x-csrf-token"
# style-src allows inline styles: xterm.js sets its theme through a <style> element it
# makes at run time (without it the terminal has no colours). Scripts stay 'self' only:
# no inline script, no eval, no other origin.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def cookie_value(scope: Scope) -> str | None:
    raw = header(scope, b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is no session, not an error
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


def same_origin(scope: Scope) -> bool:
    """Is the request's ``Origin`` this server (scheme + the ``Host`` it was sent to)?
    A missing Origin passes for plain HTTP requests (old browsers, curl) but not for
    WebSockets, where every browser sends one."""
    origin = header(scope, b"origin")
    host = header(scope, b"host")
    if origin is None:
        return scope["type"] == "http"
    secure = scope.get("scheme") in ("https", "wss")
    return host is not None and origin in (f"{'https' if secure else 'http'}://{host}",)


class Gate:
    def __init__(self, app: ASGIApp, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        path = scope["path"]
        session = None if path.startswith(OPEN_PATHS) else self.sessions.check(cookie_value(scope))
        send = _with_headers(send)
        if scope["method"] not in SAFE_METHODS and not same_origin(scope):
            await _plain(send, 403, "cross-site request refused (Origin is not this server)")
            return
        if not path.startswith(OPEN_PATHS):
            if session is None:
                await _to_login(scope, send)
                return
            if scope["method"] not in SAFE_METHODS and not session.csrf_ok(header(scope, CSRF_HEADER)):
                await _plain(send, 403, "missing or wrong CSRF token (reload the page)")
                return
        scope["state"] = {**scope.get("state", {}), "session": session}
        if session is None or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:  # one audit row per change, as the API writes (api/auth.py)
            self._audit(scope, session.principal, status)

    def _audit(self, scope: Scope, principal: Any, status: int) -> None:
        client = scope.get("client")
        try:
            self.sessions.store.audit(key_id=principal.key_id, project=principal.project,
                                      action=f"{scope['method']} {scope['path']}", obj=scope["path"], status=status,
                                      client=client[0] if client else None)
        except Exception:  # the audit must never turn a done change into an error answer
            log.exception("audit write failed for %s", scope["path"])

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self.sessions.check(cookie_value(scope))
        if session is None or not same_origin(scope):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # before accept: a 403 to the client
            return
        scope["state"] = {**scope.get("state", {}), "session": session}
        await self.app(scope, receive, send)


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)
    return wrapped


async def _plain(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": text.encode()})


async def _to_login(scope: Scope, send: Send) -> None:
    """Page loads are redirected; htmx and fetch calls get a 401 that htmx follows."""
    if header(scope, b"hx-request") or scope["method"] != "GET" or "text/html" not in (header(scope, b"accept") or ""):
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"hx-redirect", LOGIN.encode())]})
        await send({"type": "http.response.body", "body": b"not logged in"})
        return
    await send({"type": "http.response.start", "status": 303, "headers": [(b"location", LOGIN.encode())]})
    await send({"type": "http.response.body", "body": b""})
