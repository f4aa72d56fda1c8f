"""envd's plain HTTP routes: ``GET /health``, ``GET /files`` (download), ``POST /files``
(upload: multipart, one part per file, or one ``application/octet-stream`` body),
translated onto the agent's ``/api/v1/files``. Errors are envd's JSON
``{"code": status, "message": …}``, which the SDK turns into its exceptions.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator


from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import CellboxError
from .context import EnvdDenied, Env
from .fs_svc import MAX_PATH
from .link import AgentSaid

MAX_UPLOAD = 512 << 20  # per request; the agent and the disk quota bound what is kept
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
            written = []
            if request.headers.get("content-type", "").startswith("multipart/"):
                form = await request.form(max_files=1000, max_fields=1000, max_part_size=MAX_UPLOAD)
                given = request.query_params.get("path")
                for item in form.getlist("file"):
                    if not isinstance(item, UploadFile):
                        return _error(400, "file: expected a file part")
                    path = _path(given if given and len(form.getlist("file")) == 1 else item.filename)
                    await agent.call("PUT", "/api/v1/files", content=await item.read(), params={"path": path})
                    written.append(path)
            else:
                path = _path(request.query_params.get("path"))
                await agent.call("PUT", "/api/v1/files", content=await _capped(request), params={"path": path})
                written.append(path)
            if not written:
                return _error(400, "no file in the request")
        except CellboxError as exc:
            return _error(exc.status, exc.message)
        return JSONResponse([{"name": os.path.basename(p), "type": "file", "path": p} for p in written])

    return Starlette(routes=[Route("/health", health, methods=["GET"]),
                             Route("/files", download, methods=["GET"]),
                             Route("/files", upload, methods=["POST"])])


async def _capped(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD:
            raise AgentSaid(413, "PAYLOAD_TOO_LARGE", f"upload over {MAX_UPLOAD} bytes")
    return bytes(body)


