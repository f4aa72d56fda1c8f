"""Request parameters every route table reads: the project, a client's time budget."""

from __future__ import annotations

from fastapi import Request


def namespace(request: Request) -> str:
    """The request's project: fixed by the front door (``api/auth.py``) from the key and
    the path; without the door (unit tests) the path's namespace, flat paths ``default``."""
    project = request.scope.get("state", {}).get("project")
    return project or request.path_params.get("namespace", "default")  # type: ignore[no-any-return]


def budget(timeout_ms: str | None, grace_ms: str | None) -> float | None:
    """Seconds a blocking create may take: the client's timeout minus its grace."""
    try:
        timeout = int(timeout_ms) if timeout_ms else None
        grace = int(grace_ms) if grace_ms else 0
    except ValueError:
        return None  # a header we cannot read does not make the request invalid
    if timeout is None:
        return None
    return max(0.0, (timeout - grace) / 1000)
