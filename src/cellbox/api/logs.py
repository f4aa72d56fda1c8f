"""``GET sandboxes/{id}/logs`` with Tensorlake's filters and ``GET sandboxes/{id}/processes``
(spec §2.9, §2 rows 24-25).

The handlers read a sandbox's lines from the app's ``log_source``: on one host this
host's (``HostLogs``: the agent's journal or the kept file), in cluster mode the
sandbox's node (``cluster/node_reads.py``). Filtering and rendering are the same.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Callable, Protocol

from fastapi import Path, Query, Request
from fastapi.responses import JSONResponse, Response

from ..logs import query
from ..logs.service import LogService
from ..manager.logs import LogLine
from . import render
from .params import namespace as _namespace

SandboxRef = Annotated[str, Path(min_length=1, max_length=128, description="sandbox ID or name")]


class LogSource(Protocol):
    async def lines(self, ref: str, namespace: str) -> tuple[str, str, list[LogLine], bool]:
        """(sandbox ID, its project, its lines, whether older ones were left out)."""
        ...


class HostLogs:
    """This host's sandboxes: the record, then its agent's journal or its kept file."""

    def __init__(self, service: Any, logs: LogService | None) -> None:
        self.service, self.logs = service, logs

    async def lines(self, ref: str, namespace: str) -> tuple[str, str, list[LogLine], bool]:
        rec = self.service.get(ref, namespace)
        assert self.logs is not None, "an app with a stand-in service serves no logs"
        lines, cut = await self.logs.lines(rec)
        return rec.id, rec.namespace, lines, cut


def _source(request: Request) -> LogSource:
    return request.app.state.log_source  # type: ignore[no-any-return]


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
    levels = query.parse_levels(level or [])
    sid, namespace, lines, cut = await _source(request).lines(sandbox_id, _namespace(request))
    page, token = query.select(lines, levels=levels, process_ids=process_id or [], body=body,
                               head=head, tail=tail, token=next_token)
    # Rendering thousands of entries (a uuid5 each) is CPU work: off the event loop.
    payload = await asyncio.to_thread(lambda: json.dumps(render.log_signals(sid, namespace, page, token)).encode())
    headers = {"x-cellbox-logs-truncated": "true"} if cut else None
    return Response(payload, media_type="application/json", headers=headers)


async def log_processes(request: Request, sandbox_id: SandboxRef) -> JSONResponse:
    """The processes that printed something: the values ``processId`` filters by."""
    _, _, lines, _ = await _source(request).lines(sandbox_id, _namespace(request))
    return JSONResponse({"processes": query.processes(lines)})


ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/sandboxes/{sandbox_id}/logs", sandbox_logs),
    ("GET", "/sandboxes/{sandbox_id}/processes", log_processes),
]
