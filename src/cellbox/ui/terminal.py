"""Terminal tabs: the agent's PTY sessions, reached through a console route.

Why a console route and not the sandbox proxy: a browser can set neither an
``Authorization`` header nor the proxy's ``Host: {id}.local`` on a WebSocket, and the
console must not give the page an API key to try. So the page talks to
``/ui/sandboxes/{id}/pty/{pty}/ws`` on the console's own origin (session cookie,
``Origin`` checked by the gate), and this module relays frames to the agent's PTY
WebSocket with the host's authority, like the proxy does. The page speaks the agent's
frame protocol (spec §3.3: 0x00 input, 0x01 resize, 0x02 ready); the relay passes
only those three opcodes upstream.

The PTY token stays here (never in the page): ``Terminals`` maps (sandbox, session)
to it, so a reloaded page re-attaches to its session by ID alone. Tokens are lost
with the server process; the page then opens a new session.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import CellboxError, InvalidRequest, NotFound
from . import agent
from .agentws import AgentSocket
from .context import project_of, service_of

log = logging.getLogger(__name__)
CLIENT_OPCODES = (0x00, 0x01, 0x02)
MAX_FRAME = 64 << 10
MAX_TERMINALS = 4096


class Terminals:
    def __init__(self) -> None:
        self.tokens: dict[tuple[str, str], str] = {}

    def remember(self, sandbox_id: str, pty_id: str, token: str) -> None:
        if len(self.tokens) >= MAX_TERMINALS:
            self.tokens.pop(next(iter(self.tokens)))
        self.tokens[(sandbox_id, pty_id)] = token


async def open_pty(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    body = await request.body()
    try:
        size = json.loads(body) if body else {}
        rows, cols = int(size.get("rows", 24)), int(size.get("cols", 80))
    except (ValueError, TypeError, AttributeError):
        raise InvalidRequest("body: {\"rows\": N, \"cols\": N}") from None
    if not (1 <= rows <= 1000 and 1 <= cols <= 1000):
        raise InvalidRequest("rows, cols: 1..1000")
    req = {"command": "/bin/bash", "args": ["-l"], "rows": rows, "cols": cols, "env": {"TERM": "xterm-256color"}}
    status, raw = await agent.call(svc, rec, "POST", "/api/v1/pty", json_body=req)
    agent.check(status, raw, "open a terminal")
    doc = json.loads(raw)
    request.app.state.terminals.remember(rec.id, doc["session_id"], doc["token"])
    return JSONResponse({"session_id": doc["session_id"]}, status_code=201)


async def close_pty(request: Request) -> Response:
    """End a terminal tab's PTY session (its shell gets SIGHUP, like closing a terminal)."""
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    pty_id = request.path_params["pty_id"]
    if request.app.state.terminals.tokens.pop((rec.id, pty_id), None) is None:
        raise NotFound("no such terminal session", code="PTY_NOT_FOUND")
    status, raw = await agent.call(svc, rec, "DELETE", f"/api/v1/pty/{quote(pty_id)}")
    if status != 404:  # already gone is closed too
        agent.check(status, raw, "close the terminal")
    return Response(status_code=204)


async def relay(ws: WebSocket) -> None:
    svc = ws.app.state.service
    project = ws.scope["state"]["session"].principal.project
    pty_id = ws.path_params["pty_id"]
    try:
        rec = agent.running(svc, ws.path_params["sandbox_id"], project)
        token = ws.app.state.terminals.tokens.get((rec.id, pty_id))
        if token is None:
            raise NotFound("no such terminal session", code="PTY_NOT_FOUND")
        ip, port = svc.manager.agent_address(rec)
        upstream = await AgentSocket.open(ip, port, agent.agent_client.key_of(rec), pty_id, token)
    except (CellboxError, OSError, TimeoutError) as exc:
        log.info("terminal %s of %s refused: %s", pty_id, ws.path_params["sandbox_id"], exc)
        await ws.close(code=4404)  # before accept: the page opens a new session
        return
    await ws.accept()
    try:
        await _pump(ws, upstream)
    finally:
        upstream.close()


async def _pump(ws: WebSocket, upstream: AgentSocket) -> None:
    async def down() -> None:
        while (data := await upstream.recv()) is not None:
            await ws.send_bytes(data)

    async def up() -> None:
        while True:
            data = await ws.receive_bytes()
            if not data or data[0] not in CLIENT_OPCODES or len(data) > MAX_FRAME:
                continue  # not the agent's protocol: dropped, never forwarded
            await upstream.send(data)

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, WebSocketDisconnect, OSError, RuntimeError, KeyError):
                pass
        try:
            await ws.close()
        except (RuntimeError, WebSocketDisconnect, OSError):  # the browser went first: nothing to close
            pass


ROUTES = [
    Route("/ui/sandboxes/{sandbox_id}/pty", open_pty, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/pty/{pty_id}/close", close_pty, methods=["POST"]),
    WebSocketRoute("/ui/sandboxes/{sandbox_id}/pty/{pty_id}/ws", relay),
]
