"""``GET sandboxes/{id}/logs`` with Tensorlake's filters and ``GET sandboxes/{id}/processes``
(spec §2.9, §2 rows 24-25)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Callable

from fastapi import Path, Query, Request
from fastapi.responses import JSONResponse, Response

from ..logs import query
from ..logs.service import LogService
from . import render
from .params import namespace as _namespace

SandboxRef = Annotated[str, Path(min_length=1, max_length=128, description="sandbox ID or name")]


def _logs(request: Request) -> LogService:
    return request.app.state.logs  # type: ignore[no-any-return]


async def sandbox_logs(
    request: Request,
    sandbox_id: SandboxRef,
    level: Annotated[list[str] | None, Query(max_length=16)] = None,
    process_id: Annotated[list[str] | None, Query(alias="processId", max_length=64)] = None,
    head: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    body: Annotated[str | None, Query(max_length=1024)] = None,
    next_token: Annotated[str | None, Query(alias="nextToken", max_length=32)] = None,
) -> Response:
    """What the sandbox's processes printed, as SandboxLogSignal entries, filtered; a
    page of at most ``head`` (default 1000) lines and ``nextToken`` for the rest. Live
    logs are the newest 10,000 lines / 4 MiB (``x-cellbox-logs-truncated: true`` when
    more exist)."""
    svc = request.app.state.service
    rec = svc.get(sandbox_id, _namespace(request))
    levels = query.parse_levels(level or [])
    lines, cut = await _logs(request).lines(rec)
    page, token = query.select(lines, levels=levels, process_ids=process_id or [], body=body,
                               head=head, tail=tail, token=next_token)
    # Rendering thousands of entries (a uuid5 each) is CPU work: off the event loop.
    payload = await asyncio.to_thread(lambda: json.dumps(render.log_signals(rec, page, token)).encode())
    headers = {"x-cellbox-logs-truncated": "true"} if cut else None
    return Response(payload, media_type="application/json", headers=headers)


async def log_processes(request: Request, sandbox_id: SandboxRef) -> JSONResponse:
    """The processes that printed something: the values ``processId`` filters by."""
    rec = request.app.state.service.get(sandbox_id, _namespace(request))
    lines, _ = await _logs(request).lines(rec)
    return JSONResponse({"processes": query.processes(lines)})


ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/sandboxes/{sandbox_id}/logs", sandbox_logs),
    ("GET", "/sandboxes/{sandbox_id}/processes", log_processes),
]
