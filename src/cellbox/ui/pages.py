"""The console's pages (GET only): sandboxes, one sandbox, snapshots, images, keys,
usage and audit. Everything is read through ``SandboxService`` and the door's store
for the session's project only; another project's sandbox is the service's 404."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import re

from ..api.door import PROJECT_PATTERN, QUOTA_NAMES
from ..errors import InvalidRequest
from ..manager.records import Status
from .context import door_of, project_of, render, require_admin, service_of
from .rows import list_rows

STATUSES = [s.value for s in Status]
PROJECT = re.compile(PROJECT_PATTERN)


async def sandboxes(request: Request) -> Response:
    status = request.query_params.get("status", "")
    text = request.query_params.get("q", "")
    rows = list_rows(service_of(request), project_of(request), status, text)
    images = [i.name for i in service_of(request).manager.image_manager.list()]
    return render(request, "sandboxes.html", rows=rows, statuses=STATUSES, status=status, q=text, images=images)


async def rows_fragment(request: Request) -> Response:
    rows = list_rows(service_of(request), project_of(request), request.query_params.get("status", ""),
                     request.query_params.get("q", ""))
    return render(request, "_rows.html", rows=rows)


async def sandbox(request: Request) -> Response:
    svc = service_of(request)
    rec = svc.get(request.path_params["sandbox_id"], project_of(request))
    snaps = svc.list_snapshots(rec.namespace, rec.id)
    return render(request, "sandbox.html", rec=rec, snapshots=snaps,
                  policy=rec.extra.get("network_policy"), path=request.query_params.get("path", "/"))


async def snapshots(request: Request) -> Response:
    snaps = service_of(request).list_snapshots(project_of(request))
    return render(request, "snapshots.html", snapshots=snaps)


async def images(request: Request) -> Response:
    return render(request, "images.html", images=service_of(request).manager.image_manager.list())


async def keys(request: Request) -> Response:
    require_admin(request)
    return render(request, "keys.html", keys=recent_keys(request), new_key=None)


def recent_keys(request: Request, limit: int = 200) -> list:
    """The newest keys (of ``?project=`` if given): a server used by tests holds thousands."""
    project = request.query_params.get("project") or None
    return sorted(door_of(request).store.list_keys(project), key=lambda k: k.created_at, reverse=True)[:limit]


async def usage(request: Request) -> Response:
    """The session's project; admins may look at another with ``?project=``."""
    project = project_of(request)
    asked = request.query_params.get("project")
    if asked and asked != project:
        require_admin(request)
        if not PROJECT.match(asked):
            raise InvalidRequest("project: not a project name")
        project = asked
    svc = service_of(request)
    return render(request, "usage.html", project=project, use=svc.quota_usage(project),
                  limits=door_of(request).store.get_quota(project), quota_names=QUOTA_NAMES)


async def audit(request: Request) -> Response:
    require_admin(request)
    return render(request, "audit.html", entries=door_of(request).store.audit_log(limit=200))



ROUTES = [
    Route("/ui/sandboxes", sandboxes, methods=["GET"]),
    Route("/ui/sandboxes/rows", rows_fragment, methods=["GET"]),
    Route("/ui/sandboxes/{sandbox_id}", sandbox, methods=["GET"]),
    Route("/ui/snapshots", snapshots, methods=["GET"]),
    Route("/ui/images", images, methods=["GET"]),
    Route("/ui/keys", keys, methods=["GET"]),
    Route("/ui/usage", usage, methods=["GET"]),
    Route("/ui/audit", audit, methods=["GET"]),
]
