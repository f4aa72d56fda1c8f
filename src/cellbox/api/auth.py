"""The API's front door: every request but the health check shows a valid key.

An ASGI middleware rather than a per-route dependency, so a route added later cannot
forget the check (``tests/api/test_door.py`` walks the route table to prove it). It:

* answers 401 (with ``WWW-Authenticate: Bearer``) for a missing, malformed, unknown,
  revoked or expired key;
* fixes the request's project: ``/v1/namespaces/{ns}/…`` must name the key's project
  (admins: any), flat paths act on the key's own project; another project's namespace
  is a 404, like any object the key may not see;
* puts the principal and the project in ``scope["state"]`` for the handlers;
* (images are per project: ``api/image_access.py`` decides who sees and changes each);
* writes one audit row per state-changing call (method other than GET/HEAD), after the
  response, with the status it got.
"""

from __future__ import annotations

import logging
import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth.audit import Audit
from ..auth.guard import Authenticator
from ..auth.keys import Principal
from ..errors import CellboxError
from . import errors

log = logging.getLogger(__name__)

HEALTH_PATH = "/health"
# Context uploads of Tensorlake's Image Service view: the SDK sends them with no key (as
# to a presigned URL); the URL's random token is the credential (api/cas_builds.py).
UPLOAD_PATH = re.compile(r"^/images/v4/uploads/[^/]+/[^/]+$")
E2B_PREFIX = "/e2b/"  # E2B's REST view (cellbox/e2b/rest.py), whose SDK sends the key as X-API-KEY
_NAMESPACED = re.compile(r"^/v1/namespaces/([^/]+)(?:/|$)")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def principal_of(scope: Scope) -> Principal:
    return scope["state"]["principal"]  # type: ignore[no-any-return]


class AuthGate:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, audit: Audit | None = None) -> None:
        self.app = app
        self.auth = authenticator
        self.audit = audit  # failed authentications (auth/audit.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == HEALTH_PATH or (
                scope["method"] == "PUT" and UPLOAD_PATH.match(scope["path"])):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if header is None and scope["path"].startswith(E2B_PREFIX):  # E2B's SDK: X-API-KEY (cellbox/e2b/)
            e2b_key = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
            header = b"Bearer " + e2b_key if e2b_key else None
        try:
            principal = self.auth.authenticate(header)
        except CellboxError as exc:
            response = errors.error_response(exc.status, exc.code, exc.message, {"WWW-Authenticate": "Bearer"})
            if scope["path"].startswith(E2B_PREFIX):  # E2B's error shape, which its SDK parses strictly
                response = JSONResponse({"code": exc.status, "message": exc.message}, status_code=exc.status)
            await response(scope, receive, send)
            if self.audit is not None:
                client = scope.get("client")
                self.audit.failed_auth(authorization=header, method=scope["method"], target=scope["path"],
                                       status=exc.status, client=client[0] if client else None, via="api")
            return
        match = _NAMESPACED.match(scope["path"])
        project = match.group(1) if match else principal.project
        if not principal.may_use(project):
            # 404, never 403: a key must not learn which other projects exist.
            response = errors.error_response(404, "NOT_FOUND", f"namespace {project!r} not found")
            await response(scope, receive, send)
            return
        scope["state"] = {**scope.get("state", {}), "principal": principal, "project": project}
        if scope["method"] in _READS:
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
        finally:
            self._audit(scope, principal, project, status)

    def _audit(self, scope: Scope, principal: Principal, project: str, status: int) -> None:
        client = scope.get("client")
        route = scope.get("route")
        action = f"{scope['method']} {getattr(route, 'path', None) or scope['path']}"
        try:
            self.auth.store.audit(key_id=principal.key_id, project=project, action=action, obj=scope["path"],
                                  status=status, client=client[0] if client else None)
        except Exception:  # the audit must never turn a done change into an error answer
            log.exception("audit write failed for %s", action)
