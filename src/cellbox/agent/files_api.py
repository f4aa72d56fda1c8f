"""HTTP handlers for ``/api/v1/files`` and ``/api/v1/files/list``.

Downloads stream the file in 256 KiB chunks with a ``Content-Length`` (when
the size is known); uploads stream the request body straight into a temp file
(``files.Upload``) -- neither ever holds a whole file in memory, so size is
unbounded.  Semantics and error codes live in ``files.py``.
"""

from __future__ import annotations

import os
from typing import AsyncIterator

from .files import CHUNK, FileRoot
from .routes import Router
from .server import Request, Response, StreamingResponse, empty_response, json_response


class FileAPI:
    def __init__(self, root: FileRoot) -> None:
        self.root = root

    def register(self, router: Router) -> None:
        router.add("GET", "/api/v1/files", self.read)
        router.add("PUT", "/api/v1/files", self.write)
        router.add("DELETE", "/api/v1/files", self.delete)
        router.add("GET", "/api/v1/files/list", self.list)

    async def read(self, request: Request) -> StreamingResponse:
        fd, size = self.root.open_read(request.query("path"))
        closed = False

        def close() -> None:
            nonlocal closed
            if not closed:
                closed = True
                os.close(fd)

        return StreamingResponse(
            200,
            _chunks(fd, size),
            [("Content-Type", "application/octet-stream")],
            content_length=size,
            on_close=close,
        )

    async def write(self, request: Request) -> Response:
        upload = self.root.begin_write(request.query("path"))
        try:
            async for chunk in request.stream():
                upload.write(chunk)
            upload.commit()
        except BaseException:
            upload.abort()
            raise
        return empty_response(204)

    async def delete(self, request: Request) -> Response:
        self.root.delete(request.query("path"))
        return empty_response(204)

    async def list(self, request: Request) -> Response:
        path = request.query("path")
        entries = self.root.list_dir(path)
        return json_response({"path": path, "entries": entries})


async def _chunks(fd: int, size: int | None) -> AsyncIterator[bytes]:
    """Read ``size`` bytes (or to EOF when unknown).  A file that shrinks
    mid-download ends early; h11 then refuses to finish the message and the
    connection is aborted, so the client sees an error rather than short data."""
    remaining = size
    while remaining is None or remaining > 0:
        data = os.read(fd, CHUNK if remaining is None else min(CHUNK, remaining))
        if not data:
            return
        if remaining is not None:
            remaining -= len(data)
        yield data
