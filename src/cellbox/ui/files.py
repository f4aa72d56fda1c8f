"""The file browser: list, download, upload (raw body, from drag and drop), delete,
and view/edit small text files, through the agent's file API."""

from __future__ import annotations

import json
import posixpath
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InvalidRequest
from . import agent
from .context import project_of, render, service_of
from .forms import one, read_form

MAX_EDIT = 256 << 10  # text files the editor opens


def _path(request: Request, default: str = "/") -> str:
    path = request.query_params.get("path", default)
    if not path.startswith("/") or "\x00" in path or len(path) > 4096:
        raise InvalidRequest("path: must be an absolute path")
    return posixpath.normpath(path)  # the agent confines it to the sandbox's tree; this only tidies ".."


async def listing(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    path = _path(request)
    status, body = await agent.call(svc, rec, "GET", "/api/v1/files/list", query={"path": path})
    agent.check(status, body, f"list {path}")
    entries = sorted(json.loads(body).get("entries", []), key=lambda e: (not e.get("is_dir"), e.get("name", "")))
    parent = posixpath.dirname(path) if path != "/" else None
    return render(request, "_files.html", rec=rec, path=path, parent=parent, entries=entries,
                  join=posixpath.join)


async def download(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    path = _path(request, "")
    status, body = await agent.call(svc, rec, "GET", "/api/v1/files", query={"path": path}, max_bytes=agent.MAX_FILE)
    agent.check(status, body, f"read {path}")
    # The tenant names its files: only safe characters reach a response header.
    name = re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.basename(path))[:200] or "file"
    return Response(body, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def upload(request: Request) -> Response:
    """A raw body (what the page's drop handler sends), at most ``MAX_FILE`` bytes."""
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    path = _path(request, "")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > agent.MAX_FILE:
            raise InvalidRequest(f"upload: larger than {agent.MAX_FILE >> 20} MiB (use cellbox cp)")
    status, body = await agent.call(svc, rec, "PUT", "/api/v1/files", query={"path": path}, content=bytes(data),
                                    timeout=120.0)
    agent.check(status, body, f"write {path}")
    return Response(status_code=204)


async def delete(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    path = _path(request, "")
    status, body = await agent.call(svc, rec, "DELETE", "/api/v1/files", query={"path": path})
    agent.check(status, body, f"delete {path}")
    return await listing_of(request, posixpath.dirname(path))


async def listing_of(request: Request, path: str) -> Response:
    request.scope["query_string"] = f"path={path}".encode()
    return await listing(request)


async def edit(request: Request) -> Response:
    svc = service_of(request)
    rec = agent.running(svc, request.path_params["sandbox_id"], project_of(request))
    path = _path(request, "")
    if request.method == "POST":
        text = one(await read_form(request), "text")
        status, body = await agent.call(svc, rec, "PUT", "/api/v1/files", query={"path": path}, content=text.encode())
        agent.check(status, body, f"write {path}")
        return render(request, "_edit.html", rec=rec, path=path, text=text, saved=True)
    status, body = await agent.call(svc, rec, "GET", "/api/v1/files", query={"path": path}, max_bytes=agent.MAX_FILE)
    agent.check(status, body, f"read {path}")
    if len(body) > MAX_EDIT or b"\x00" in body:
        raise InvalidRequest(f"{path}: not a small text file (download it instead)", code="NOT_TEXT")
    return render(request, "_edit.html", rec=rec, path=path, text=body.decode("utf-8", "replace"), saved=False)


ROUTES = [
    Route("/ui/sandboxes/{sandbox_id}/files", listing, methods=["GET"]),
    Route("/ui/sandboxes/{sandbox_id}/files", upload, methods=["PUT"]),
    Route("/ui/sandboxes/{sandbox_id}/files/download", download, methods=["GET"]),
    Route("/ui/sandboxes/{sandbox_id}/files/delete", delete, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/files/edit", edit, methods=["GET", "POST"]),
]
