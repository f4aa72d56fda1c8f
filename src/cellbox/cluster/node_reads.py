"""Reads a control-plane replica makes of a node directly: a sandbox's logs.

A replica serves ``GET /sandboxes/{id}/logs`` and ``/processes`` (``api/logs.py``'s
handlers, unchanged) from :class:`NodeLogs`: the sandbox's row says its node and its
ID there; the node's internal port (its data-path port + 1, beside the migration
routes of ``migrate_in.py``) answers with the lines its agent holds. A read is not a
command: nothing changes, so it is a direct call, not an outbox row a node has to
claim. Its credential (``nodeauth.read_token``) names the node, the local ID and the
project, for 60 s.

What comes back is parsed strictly (types, sizes): the lines are the tenant's output,
and the node's answer is input like any other. A sandbox that does not run on a
node (suspended to object storage, ended) has no agent to ask and no kept file on a
replica: 409 ``SANDBOX_NOT_RUNNING`` saying so (docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import ids
from ..errors import CellboxError, SandboxNotRunning
from ..manager.logs import LogLine
from ..manager.records import Status
from ..manager.service import SandboxService
from . import nodeauth
from .control import ControlPlane

READ_TIMEOUT_S = 15.0  # the node's own bound on asking an agent (logs.service.KEEP_WAIT) plus margin
MAX_ANSWER = 16 << 20  # the agent's journal is bounded at 4 MiB of text; JSON adds quoting
MAX_FIELD = 1 << 20


class NodeUnavailable(CellboxError):
    """The sandbox's node did not answer a read (503): nothing changed; retry."""

    status = 503
    code = "NODE_UNAVAILABLE"
    headers = {"Retry-After": "1"}


# -- the node's side ------------------------------------------------------------------------


def routes(service: SandboxService, key: bytes, node_id: str) -> list[Route]:
    async def log_lines(request: Request) -> JSONResponse:
        local = request.path_params["local"]
        project = request.query_params.get("project", "")
        if not ids.is_id(local) or not nodeauth.verify_read(key, request.headers.get("authorization"), node_id,
                                                            local, project):
            return JSONResponse({"code": "UNAUTHORIZED", "message": "not a read of this node"}, 401)
        try:
            rec = service.get(local, project)
            if rec.status != Status.RUNNING:
                raise SandboxNotRunning(rec.id, rec.status.value)
            lines, cut = await asyncio.wait_for(service.logs(rec), READ_TIMEOUT_S - 2)
        except CellboxError as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, exc.status)
        except asyncio.TimeoutError:
            return JSONResponse({"code": "AGENT_TIMEOUT", "message": "the sandbox's agent did not answer"}, 502)
        return JSONResponse({"lines": [[ln.timestamp, ln.body, ln.pid, ln.command, ln.level] for ln in lines],
                             "truncated": cut})

    return [Route("/sandboxes/{local}/log-lines", log_lines, methods=["GET"])]


# -- the replica's side ---------------------------------------------------------------------


class NodeLogs:
    """``api/logs.py``'s log source in cluster mode: the lines from the sandbox's node."""

    def __init__(self, control: ControlPlane, key: bytes) -> None:
        self.control, self.key = control, key

    async def lines(self, ref: str, namespace: str) -> tuple[str, str, list[LogLine], bool]:
        sb, address = await self.control.route(namespace, ref)
        if sb.state != "running" or address is None or sb.node_id is None:
            raise SandboxNotRunning(sb.id, sb.state, suffix=": in cluster mode its logs are read from its node "
                                                            "while it runs (docs/cluster.md)")
        local = sb.local_id or sb.id
        host, _, port = address.rpartition(":")
        url = f"http://{host}:{int(port) + 1}/sandboxes/{local}/log-lines"
        token = nodeauth.read_token(self.key, sb.node_id, local, sb.project)
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=3)) as http, \
                    http.stream("GET", url, params={"project": sb.project},
                                headers={"Authorization": f"Bearer {token}"}) as r:
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER:
                        raise NodeUnavailable(f"node {sb.node_id} sent more than {MAX_ANSWER} bytes of logs")
                status = r.status_code
        except httpx.HTTPError as exc:
            raise NodeUnavailable(f"node {sb.node_id} did not answer: {type(exc).__name__}") from None
        answer = _json(bytes(body))
        if status != 200:
            raise _relayed(status, answer, sb.node_id)
        return sb.id, sb.project, _parse_lines(answer), answer.get("truncated") is True


def _json(body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    return answer if isinstance(answer, dict) else {}


def _relayed(status: int, answer: dict[str, Any], node_id: str) -> CellboxError:
    """A node's refusal as ours: its 4xx code and message (bounded), anything else a 503."""
    code, message = answer.get("code"), answer.get("message")
    if 400 <= status < 500 and status != 401 and isinstance(code, str) and isinstance(message, str):
        err = CellboxError(message[:500], code=code[:64])
        err.status = status
        return err
    return NodeUnavailable(f"node {node_id} could not read the logs ({status})")


def _parse_lines(answer: dict[str, Any]) -> list[LogLine]:
    raw = answer.get("lines")
    if not isinstance(raw, list):
        raise NodeUnavailable("a node's logs answer had no lines")
    out: list[LogLine] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 5):
            raise NodeUnavailable("a node's logs answer had a malformed line")
        ts, body, pid, command, level = item
        if not (isinstance(ts, int) and isinstance(body, str) and len(body) <= MAX_FIELD
                and (pid is None or isinstance(pid, int)) and isinstance(level, int) and 1 <= level <= 6
                and (command is None or (isinstance(command, str) and len(command) <= MAX_FIELD))):
            raise NodeUnavailable("a node's logs answer had a malformed line")
        out.append(LogLine(timestamp=ts, body=body, pid=pid, command=command, level=level))
    return out
