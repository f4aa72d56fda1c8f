"""The images page's actions (admins: the catalog is shared by every project): build
from an uploaded Dockerfile with the build's log streaming live, pull, warm pool size.

A build or pull is a job of the image manager (``ImageManager.spawn``: it goes on if
the page goes away, and server stop waits for it); its lines are kept in a ``Job``
(bounded) that the page follows over SSE, so a reload can pick the log up again.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import CellboxError, InvalidRequest, NotFound
from ..images import refs
from ..images.build import BuildRequest, validate
from .context import render, require_admin, service_of, sessions_of
from .forms import one, read_form
from .live import STREAM_HEADERS, event
from .security import cookie_value

MAX_DOCKERFILE = 256 << 10
MAX_LINES = 5000
MAX_JOBS = 100
_ids = itertools.count(1)


@dataclass
class Job:
    id: str
    title: str
    lines: list[str] = field(default_factory=list)
    outcome: str | None = None  # None while it runs

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) > MAX_LINES:
            del self.lines[: len(self.lines) - MAX_LINES]


def _jobs(request: Request) -> dict[str, Job]:
    jobs: dict[str, Job] = request.app.state.image_jobs
    while len(jobs) >= MAX_JOBS:
        jobs.pop(next(iter(jobs)))
    return jobs


def _start(request: Request, title: str, work: Callable[[Callable[[str], None]], Awaitable[Any]],
           cleanup: Callable[[], None] = lambda: None) -> Response:
    job = Job(str(next(_ids)), title)
    _jobs(request)[job.id] = job

    async def runner() -> None:
        try:
            info = await work(job.add)
            job.outcome = f"done: {info.name}"
        except CellboxError as exc:
            job.outcome = f"failed: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - shown on the page; the manager logs its own
            job.outcome = f"failed: {type(exc).__name__}: {exc}"
        finally:
            cleanup()

    service_of(request).manager.image_manager.spawn(runner())
    return render(request, "_job.html", job=job)


async def build(request: Request) -> Response:
    """Body: the Dockerfile's text (the page reads the chosen file); context: just it."""
    require_admin(request)
    name = request.query_params.get("name", "")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_DOCKERFILE:
            raise InvalidRequest(f"Dockerfile: larger than {MAX_DOCKERFILE >> 10} KiB (build bigger contexts with "
                                 "cellbox image build)")
    images = service_of(request).manager.image_manager
    tmp = Path(tempfile.mkdtemp(prefix="ui-context-", dir=images.tools.tmp_dir()))
    try:
        (tmp / "Dockerfile").write_bytes(bytes(data))
        req = BuildRequest(name=name, context=tmp)
        validate(req)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _start(request, f"build {name}", lambda on_line: images.build(req, on_line),
                  lambda: shutil.rmtree(tmp, ignore_errors=True))


async def pull(request: Request) -> Response:
    require_admin(request)
    image = one(await read_form(request), "image")
    if not refs.parse(image).is_remote:
        raise InvalidRequest(f"image: {image!r} is not a registry reference (HOST[:PORT]/NAME[:TAG])")
    images = service_of(request).manager.image_manager
    return _start(request, f"pull {image}", lambda on_line: images.pull(image, on_line=on_line))


async def warm(request: Request) -> Response:
    require_admin(request)
    form = await read_form(request)
    try:
        size = int(one(form, "size"))
    except ValueError:
        raise InvalidRequest("size: a number") from None
    info = await service_of(request).manager.image_manager.set_warm_pool(request.path_params["name"], size)
    return HTMLResponse(f'<p class="ok" role="status">warm pool of {escape(info.name)}: {info.warm_pool}</p>')


async def job_feed(request: Request) -> Response:
    require_admin(request)
    job = request.app.state.image_jobs.get(request.path_params["job_id"])
    if job is None:
        raise NotFound("no such job (jobs are kept in memory, by the server process that ran them)")

    async def stream() -> AsyncIterator[bytes]:
        sent = 0
        while sessions_of(request).check(cookie_value(request.scope)) and not await request.is_disconnected():
            lines = job.lines[sent:]
            sent += len(lines)
            for line in lines:
                yield event("line", line)
            if job.outcome is not None and sent >= len(job.lines):
                yield event("done", job.outcome)
                return
            await asyncio.sleep(0.2)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=STREAM_HEADERS)


ROUTES = [
    Route("/ui/images/build", build, methods=["POST"]),
    Route("/ui/images/pull", pull, methods=["POST"]),
    Route("/ui/images/jobs/{job_id}/events", job_feed, methods=["GET"]),
    Route("/ui/images/{name:path}/warm", warm, methods=["POST"]),
]
