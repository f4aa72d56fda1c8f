"""envd's plain HTTP routes: ``GET /health``, ``GET /files`` (download), ``POST /files``
(upload: multipart, one part per file, or one ``application/octet-stream`` body),
translated onto the agent's ``/api/v1/files``. Errors are envd's JSON
``{"code": status, "message": …}``, which the SDK turns into its exceptions.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any


from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import CellboxError
from .context import EnvdDenied, Env
from .fs_svc import MAX_PATH
from .link import Agent, AgentSaid

# Per request; the agent and the disk quota bound what is kept. CELLBOX_E2B_MAX_UPLOAD
# (bytes) changes it (tests use a small one).
MAX_UPLOAD = int(os.environ.get("CELLBOX_E2B_MAX_UPLOAD", 512 << 20))
DRAIN = 64 << 20  # body bytes read and dropped past the cap before a 413 (see _Capped)
READ_CHUNK = 256 << 10


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def _path(raw: str | None) -> str:
    if not raw or "\x00" in raw or len(raw) > MAX_PATH or not raw.startswith("/"):
        raise AgentSaid(400, "INVALID_PATH", f"path must be an absolute path (got {raw!r})")
    return raw


def build(env: Env) -> Starlette:
    async def health(request: Request) -> Response:
        """204 while the sandbox runs; 502 once it is gone (the SDK's ``is_running`` reads that)."""
        try:
            await env.locate(request.headers)
        except EnvdDenied as exc:
            return _error(exc.status, exc.message)
        except CellboxError as exc:
            return _error(502, f"sandbox is not running: {exc.message}")
        return Response(status_code=204)

    async def download(request: Request) -> Response:
        try:
            agent = await env.locate(request.headers)
            path = _path(request.query_params.get("path"))
            stream = agent.stream("GET", "/api/v1/files", params={"path": path})
            resp = await stream.__aenter__()
        except CellboxError as exc:
            return _error(exc.status, exc.message)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_raw(READ_CHUNK):
                    yield chunk
            finally:
                await stream.__aexit__(None, None, None)

        return StreamingResponse(body(), media_type="application/octet-stream")

    async def upload(request: Request) -> Response:
        try:
            agent = await env.locate(request.headers)
            size = request.headers.get("content-length")
            if size and size.isdigit() and int(size) > MAX_UPLOAD:
                return _error(413, f"upload over {MAX_UPLOAD} bytes")
            written = await _write(agent, request)
        except CellboxError as exc:
            return _error(exc.status, exc.message)
        except _TooLarge:
            return _error(413, f"upload over {MAX_UPLOAD} bytes")
        if not written:
            return _error(400, "no file in the request")
        return JSONResponse([{"name": os.path.basename(p), "type": "file", "path": p} for p in written])

    app = Starlette(routes=[Route("/health", health, methods=["GET"]),
                            Route("/files", download, methods=["GET"]),
                            Route("/files", upload, methods=["POST"])])
    return _Capped(app)


async def _write(agent: Agent, request: Request) -> list[str]:
    """Each file of a multipart body (one part per file, named by its filename or by
    ``?path=`` when alone), or the one octet-stream body, streamed to the agent."""
    written = []
    if request.headers.get("content-type", "").startswith("multipart/"):
        # python-multipart spools file parts over 1 MiB to disk; _Capped bounds the total.
        form = await request.form(max_files=1000, max_fields=1000)
        given = request.query_params.get("path")
        parts = form.getlist("file")
        for item in parts:
            if not isinstance(item, UploadFile):
                raise AgentSaid(400, "INVALID_UPLOAD", "file: expected a file part")
            path = _path(given if given and len(parts) == 1 else item.filename)
            await agent.call("PUT", "/api/v1/files", content=_chunks(item), params={"path": path})
            written.append(path)
    else:  # streamed through, never held whole
        path = _path(request.query_params.get("path"))
        await agent.call("PUT", "/api/v1/files", content=request.stream(), params={"path": path})
        written.append(path)
    return written


async def _chunks(item: UploadFile) -> AsyncIterator[bytes]:
    while data := await item.read(READ_CHUNK):
        yield data


class _Capped:
    """At most MAX_UPLOAD body bytes per request, whatever Content-Length says (or not):
    past it the request is answered 413. Before a 413 goes out, up to DRAIN more bytes
    of the body are read and dropped: a server that closes with unread bytes sends an
    RST, which makes the proxy lose the answer (the client would see a 502)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        seen = 0
        done = scope.get("type") != "http"  # the body has been read to its end

        async def counted() -> Any:
            nonlocal seen, done
            message = await receive()
            seen += len(message.get("body", b""))
            done = done or message["type"] != "http.request" or not message.get("more_body", False)
            if seen > MAX_UPLOAD:
                raise _TooLarge()
            return message

        async def drain() -> None:
            nonlocal done
            dropped = 0
            while not done and dropped <= DRAIN:
                message = await receive()
                dropped += len(message.get("body", b""))
                done = message["type"] != "http.request" or not message.get("more_body", False)

        async def watched(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                await drain()
            await send(message)

        await self.app(scope, counted, watched)


class _TooLarge(Exception):
    pass


