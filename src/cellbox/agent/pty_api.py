"""HTTP handlers for ``/api/v1/pty...`` (spec sections 3.1 and 3.3).

Loaded on the first PTY request (``app.py`` registers the routes through
``routes.Lazy``), together with ``ptys``/``ws``.

* ``POST /api/v1/pty`` -> 201 ``{"session_id", "token", ...session info}``;
  429 ``TOO_MANY_SESSIONS`` at 64 live sessions; exec failures are 400 with the
  same codes as ``POST /processes``.  ``user`` is accepted as for processes.
* ``GET /api/v1/pty/{sid}/ws``: 404 ``SESSION_NOT_FOUND``, then the token
  (``?token=`` or ``X-PTY-Token``; either may match) -> 403 ``INVALID_TOKEN``,
  then the WebSocket handshake (426 if it is not one).
* ``DELETE`` removes the session at once (later requests get 404) and kills it.
"""

from __future__ import annotations

from typing import Any

from .errors import APIError, bad_request
from .ptys import PtyManager
from .server import Request, Response, Upgrade, empty_response, json_response
from .users import resolve_user
from .validate import opt_str, opt_str_list, opt_str_map, req_str, require_object
from .ws import WebSocket, handshake_headers


def _dimension(obj: dict[str, Any], key: str, default: int | None) -> int:
    value = obj.get(key)
    if value is None:
        if default is None:
            raise bad_request(f"field '{key}' is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise bad_request(f"field '{key}' must be an integer between 1 and 65535")
    return value


class PtyAPI:
    def __init__(self, manager: PtyManager) -> None:
        self.ptys = manager

    async def create(self, request: Request) -> Response:
        obj = require_object(await request.json())
        command = req_str(obj, "command")
        args = opt_str_list(obj, "args")
        env = opt_str_map(obj, "env")
        working_dir = opt_str(obj, "working_dir")
        if working_dir is not None and not working_dir.startswith("/"):
            raise bad_request("field 'working_dir' must be an absolute path")
        rows = _dimension(obj, "rows", 24)
        cols = _dimension(obj, "cols", 80)
        identity = resolve_user(obj.get("user"))
        session = self.ptys.create(command, args, env, working_dir or None, identity, rows, cols)
        return json_response({**session.info(), "token": session.token}, 201)

    async def list(self, request: Request) -> Response:
        return json_response({"sessions": [s.info() for s in self.ptys.sessions.values()]})

    async def get(self, request: Request) -> Response:
        return json_response(self.ptys.get(request.params["sid"]).info())

    async def delete(self, request: Request) -> Response:
        self.ptys.delete(request.params["sid"])
        return empty_response(204)

    async def resize(self, request: Request) -> Response:
        session = self.ptys.get(request.params["sid"])
        obj = require_object(await request.json())
        session.resize(_dimension(obj, "rows", None), _dimension(obj, "cols", None))
        return empty_response(204)

    async def attach(self, request: Request) -> Upgrade:
        session = self.ptys.get(request.params["sid"])
        if not (session.check_token(request.query("token") or "") or session.check_token(
            request.headers.get("x-pty-token", "")
        )):
            raise APIError(403, "INVALID_TOKEN", "invalid or missing PTY token")
        headers = handshake_headers(request)

        async def run(reader: Any, writer: Any, trailing: bytes) -> None:
            await session.attach(WebSocket(reader, writer, trailing))

        return Upgrade(headers, run)
