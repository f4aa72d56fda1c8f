"""Processes of one sandbox: list, start, output (refreshed every second by htmx: live
enough for a console, and no open stream per process), stdin, signals; and the logs."""

from __future__ import annotations

import json
import shlex
import signal as signals

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InvalidRequest
from . import agent
from .context import project_of, render, service_of
from .forms import one, read_form

SIGNALS = {"TERM": signals.SIGTERM, "KILL": signals.SIGKILL, "INT": signals.SIGINT, "HUP": signals.SIGHUP}
LOG_TAIL = 500


def _pid(request: Request) -> int:
    text = request.path_params["pid"]
    if not text.isdigit():
        raise InvalidRequest("pid: a process ID")
    return int(text)


async def listing(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    status, body = await agent.call(svc, rec, "GET", "/api/v1/processes")
    agent.check(status, body, "list processes")
    procs = [p for p in json.loads(body).get("processes", []) if isinstance(p, dict)][-200:]
    return render(request, "_processes.html", rec=rec, procs=list(reversed(procs)), signals=SIGNALS)


async def start(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    try:
        argv = shlex.split(one(await read_form(request), "command"))
    except ValueError as exc:
        raise InvalidRequest(f"command: {exc}") from None
    if not argv:
        raise InvalidRequest("command: empty")
    req = {"command": argv[0], "args": argv[1:], "stdin_mode": "pipe"}
    status, body = await agent.call(svc, rec, "POST", "/api/v1/processes", json_body=req)
    agent.check(status, body, "start a process")
    return await listing(request)


async def output(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    pid = _pid(request)
    status, body = await agent.call(svc, rec, "GET", f"/api/v1/processes/{pid}/output?tail={LOG_TAIL}")
    agent.check(status, body, f"output of {pid}")
    lines = [x for x in json.loads(body).get("lines", []) if isinstance(x, str)]
    return render(request, "_output.html", rec=rec, pid=pid, lines=lines)


async def stdin(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    pid = _pid(request)
    text = one(await read_form(request), "text") + "\n"
    status, body = await agent.call(svc, rec, "POST", f"/api/v1/processes/{pid}/stdin", content=text.encode())
    agent.check(status, body, f"stdin of {pid}")
    return Response(status_code=204)


async def send_signal(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    pid = _pid(request)
    name = request.path_params["name"]
    if name not in SIGNALS:
        raise InvalidRequest(f"signal: one of {', '.join(SIGNALS)}")
    status, body = await agent.call(svc, rec, "POST", f"/api/v1/processes/{pid}/signal",
                                    json_body={"signal": int(SIGNALS[name])})
    agent.check(status, body, f"signal {pid}")
    return await listing(request)


async def logs(request: Request) -> Response:
    svc = service_of(request)
    rec = svc.get(request.path_params["sandbox_id"], project_of(request))
    lines, cut = await svc.logs(rec, tail=LOG_TAIL)
    return render(request, "_logs.html", lines=lines, cut=cut)


ROUTES = [
    Route("/ui/sandboxes/{sandbox_id}/processes", listing, methods=["GET"]),
    Route("/ui/sandboxes/{sandbox_id}/processes", start, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/processes/{pid}/output", output, methods=["GET"]),
    Route("/ui/sandboxes/{sandbox_id}/processes/{pid}/stdin", stdin, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/processes/{pid}/signal/{name}", send_signal, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/logs", logs, methods=["GET"]),
]
