"""``GET archived-sandboxes[/{id}]`` (spec §2 rows 14-15): terminated and failed
sandboxes, readable for the retention period (``manager/archive.py``)."""

from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import Path, Query, Request
from fastapi.responses import JSONResponse

from ..manager import archive
from ..manager.records import SandboxRecord
from . import render
from .params import namespace as _namespace


def _info(rec: SandboxRecord, proxy_url: str) -> dict[str, Any]:
    return {**render.sandbox_info(rec, proxy_url), "archived_at": archive.archived_at(rec)}


async def list_archived(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
    direction: Annotated[str | None, Query(max_length=16)] = None,
) -> JSONResponse:
    svc = request.app.state.service
    recs, prev, nxt = archive.page(svc.store, _namespace(request), limit=limit, cursor=cursor, direction=direction)
    return JSONResponse({"sandboxes": [_info(r, svc.proxy_url) for r in recs], "prev_cursor": prev,
                         "next_cursor": nxt})


async def get_archived(request: Request,
                       sandbox_id: Annotated[str, Path(min_length=1, max_length=128)]) -> JSONResponse:
    svc = request.app.state.service
    return JSONResponse(_info(archive.get(svc.store, sandbox_id, _namespace(request)), svc.proxy_url))


ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/archived-sandboxes", list_archived),
    ("GET", "/archived-sandboxes/{sandbox_id}", get_archived),
]
