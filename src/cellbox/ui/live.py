"""Server-sent events: the live sandbox list and one sandbox's use.

Polling our own database every ``TICK`` seconds, not a change feed from the manager:
changes come from other processes too (the CLI's server, a second server on the same
database, timeouts), which only the database sees, and a query of one project's
records is ~ms even at 500 sandboxes (``bench/ui.py``). A tick re-checks the session
too, so a revoked key's open page is sent ``logout`` within a tick.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..errors import NotFound
from .context import TEMPLATES, project_of, service_of, sessions_of
from .rows import fingerprint, list_rows, records
from .security import cookie_value
from .stats import sample

TICK = 0.25  # seconds between looks at the database: the list is current within ~0.3 s
STATS_EVERY = 1.0
USAGE_EVERY = 5.0  # seconds between re-renders for the rows' CPU and memory (keeps the stream alive too)
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def event(name: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n".encode()


async def _alive(request: Request) -> bool:
    return not await request.is_disconnected() and sessions_of(request).check(cookie_value(request.scope)) is not None


async def list_feed(request: Request) -> Response:
    svc, project = service_of(request), project_of(request)
    status, text = request.query_params.get("status", ""), request.query_params.get("q", "")
    template = TEMPLATES.get_template("_rows.html")

    async def stream() -> AsyncIterator[bytes]:
        seen = None
        quiet = time.monotonic()
        yield b"retry: 1000\n\n"
        while await _alive(request):
            mark = fingerprint(svc, project, status)
            if mark != seen or time.monotonic() - quiet > USAGE_EVERY:  # a change, or fresh CPU/memory
                seen = mark
                recs = records(svc, project, status, text)
                yield event("rows", template.render(rows=list_rows(svc, project, recs=recs)))
                quiet = time.monotonic()
            await asyncio.sleep(TICK)
        yield event("logout", "/ui/login")

    return StreamingResponse(stream(), media_type="text/event-stream", headers=STREAM_HEADERS)


async def stats_feed(request: Request) -> Response:
    """Once a second: CPU (cores in use), memory (MiB), network (bytes/s in and out), status."""
    svc = service_of(request)
    rec = svc.get(request.path_params["sandbox_id"], project_of(request))

    async def stream() -> AsyncIterator[bytes]:
        last, last_t = sample(rec.id), time.monotonic()
        yield b"retry: 2000\n\n"
        while await _alive(request):
            await asyncio.sleep(STATS_EVERY)
            try:
                status = svc.get(rec.id, rec.namespace).status.value
            except NotFound:
                status = "terminated"
            now, now_t = sample(rec.id), time.monotonic()
            dt = max(now_t - last_t, 1e-3)
            mem = now.get("memory_bytes")
            yield event("stats", json.dumps({"t": time.time(), "status": status,
                                             "cpu": _rate(last, now, "cpu_ns", dt, 1e9),
                                             "memory_mb": mem / 2**20 if mem is not None else None,
                                             "net_in": _rate(last, now, "net_in", dt),
                                             "net_out": _rate(last, now, "net_out", dt)}))
            last, last_t = now, now_t
        yield event("logout", "/ui/login")

    return StreamingResponse(stream(), media_type="text/event-stream", headers=STREAM_HEADERS)


def _rate(last: dict[str, int | None], now: dict[str, int | None], key: str, dt: float,
          scale: float = 1.0) -> float | None:
    """A counter's rate per second between two samples (None if either lacks it)."""
    a, b = last.get(key), now.get(key)
    return None if a is None or b is None else max(0.0, (b - a) / dt / scale)


ROUTES = [
    Route("/ui/sandboxes/events", list_feed, methods=["GET"]),
    Route("/ui/sandboxes/{sandbox_id}/stats", stats_feed, methods=["GET"]),
]
