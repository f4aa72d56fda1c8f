"""Routes of the front door: keys, quotas, the audit log (admins), secrets (a project's
own), the Tensorlake platform reads behind ``tl whoami``, and the health check.

Keys, quotas, audit and platform routes are served flat only (they are not objects of
one namespace); secrets are served under both mounts, like sandboxes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..auth import keys
from ..auth.door import Door
from ..auth.keys import Principal, Role
from ..errors import (AdminRequired, InvalidRequest, KeyNotFound, OrganizationNotFound,
                      ProjectNotFound, SecretNotFound)
from .auth import principal_of

ORGANIZATION = "cellbox"  # one organization per server: Tensorlake's org level, flattened
PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_SECRET_BYTES = 64 << 10
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
QUOTA_NAMES = ("running_sandboxes", "vcpus", "memory_mb", "disk_mb", "snapshots", "snapshot_bytes",
               "creates_per_minute")


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = Field("default", pattern=PROJECT_PATTERN)
    role: Role = Role.MEMBER
    expires: str | None = Field(None, description="lifetime: a number and s/m/h/d, e.g. 30d")
    name: str | None = Field(None, max_length=128)


class SecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(max_length=MAX_SECRET_BYTES)


class QuotaRequest(BaseModel):
    """Limits to set; a field left out keeps its value, ``null`` removes the limit."""

    model_config = ConfigDict(extra="forbid")
    running_sandboxes: int | None = Field(None, ge=0)
    vcpus: float | None = Field(None, ge=0)
    memory_mb: int | None = Field(None, ge=0)
    disk_mb: int | None = Field(None, ge=0)
    snapshots: int | None = Field(None, ge=0)
    snapshot_bytes: int | None = Field(None, ge=0)
    creates_per_minute: int | None = Field(None, ge=0)


def _door(request: Request) -> Door:
    return request.app.state.door  # type: ignore[no-any-return]


def _admin(request: Request) -> Principal:
    principal = principal_of(request.scope)
    if not principal.is_admin:
        raise AdminRequired()
    return principal


def _project(request: Request) -> str:
    return request.scope["state"]["project"]  # type: ignore[no-any-return]


def parse_lifetime(text: str) -> int:
    """Seconds in ``30d`` / ``12h`` / ``90m`` / ``45s``."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([smhd])\s*", text)
    if not match:
        raise InvalidRequest(f"expires: {text!r} is not a lifetime like 30d, 12h, 90m or 45s")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise InvalidRequest("expires: must be positive")
    return seconds


# -- health -----------------------------------------------------------------------------------


async def health(request: Request) -> JSONResponse:
    """Unauthenticated: for load balancers and readiness probes. Says nothing about objects."""
    return JSONResponse({"status": "ok"})


# -- keys (admins) ----------------------------------------------------------------------------


async def create_key(request: Request, body: Annotated[KeyRequest | None, Body()] = None) -> JSONResponse:
    """A new key; its full value is in this answer and nowhere else, ever."""
    _admin(request)
    body = body or KeyRequest()
    expires_at = None
    if body.expires:
        expires_at = int((time.time() + parse_lifetime(body.expires)) * 1000)
    key_id, full, key_hash = keys.new_key()
    row = _door(request).store.add_key(key_id, key_hash, body.project, body.role, name=body.name, expires_at=expires_at)
    return JSONResponse({**row.public(), "key": full}, status_code=201)


async def list_keys(request: Request, project: Annotated[str | None, Query(pattern=PROJECT_PATTERN)] = None) -> JSONResponse:
    _admin(request)
    return JSONResponse({"keys": [k.public() for k in _door(request).store.list_keys(project)]})


async def revoke_key(request: Request, key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]) -> JSONResponse:
    """Revoke a key: its next request, in any server process, is a 401."""
    _admin(request)
    store = _door(request).store
    if store.get_key(key_id) is None:
        raise KeyNotFound(key_id)
    store.revoke_key(key_id)
    _door(request).auth.forget(key_id)  # this process at once; others within ROW_TTL
    return JSONResponse({"id": key_id, "revoked": True})


# -- quotas (admins set, a project's keys read their own) -----------------------------------


async def get_quota(request: Request, project: Annotated[str, Path(pattern=PROJECT_PATTERN)]) -> JSONResponse:
    principal = principal_of(request.scope)
    if not principal.may_use(project):
        raise ProjectNotFound(project)
    store = _door(request).store
    return JSONResponse({"project": project, "limits": store.get_quota(project),
                         "usage": request.app.state.service.quota_usage(project)})


async def set_quota(request: Request, project: Annotated[str, Path(pattern=PROJECT_PATTERN)],
                    body: Annotated[QuotaRequest, Body()]) -> JSONResponse:
    _admin(request)
    store = _door(request).store
    limits: dict[str, Any] = store.get_quota(project)
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None:
            limits.pop(name, None)
        else:
            limits[name] = value
    store.set_quota(project, limits)
    return JSONResponse({"project": project, "limits": limits})


# -- audit (admins) -------------------------------------------------------------------------


async def audit_log(request: Request, project: Annotated[str | None, Query(pattern=PROJECT_PATTERN)] = None,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> JSONResponse:
    """State-changing calls, newest first."""
    _admin(request)
    return JSONResponse({"entries": _door(request).store.audit_log(project=project, limit=limit)})


# -- secrets (a project's own; values are never returned) -----------------------------------


def _secret_name(name: str) -> str:
    if not SECRET_NAME.match(name):
        raise InvalidRequest(f"name: {name!r} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    return name


async def list_secrets(request: Request) -> JSONResponse:
    return JSONResponse({"secrets": _door(request).store.list_secrets(_project(request))})


async def set_secret(request: Request, name: str, body: Annotated[SecretRequest, Body()]) -> JSONResponse:
    door = _door(request)
    door.store.put_secret(_project(request), _secret_name(name), door.vault.seal(body.value))
    return JSONResponse({"name": name})


async def delete_secret(request: Request, name: str) -> JSONResponse:
    if not _door(request).store.delete_secret(_project(request), _secret_name(name)):
        raise SecretNotFound([name])
    return JSONResponse({})


# -- Tensorlake platform routes (tl whoami, tl init) ----------------------------------------


def _whoami(principal: Principal) -> dict[str, Any]:
    return {"id": principal.key_id, "keyId": principal.key_id, "role": principal.role.value,
            "organizationId": ORGANIZATION, "projectId": principal.project,
            "organization_id": ORGANIZATION, "project_id": principal.project}


async def introspect_key(request: Request) -> JSONResponse:
    """The key the request carries: its id, organization and project."""
    return JSONResponse(_whoami(principal_of(request.scope)))


async def list_organizations(request: Request) -> JSONResponse:
    return JSONResponse({"items": [{"id": ORGANIZATION, "name": ORGANIZATION}]})


def _projects_of(request: Request) -> list[str]:
    principal = principal_of(request.scope)
    if not principal.is_admin:
        return [principal.project]
    return sorted({k.project for k in _door(request).store.list_keys()} | {principal.project})


def _org(org: str) -> None:
    if org != ORGANIZATION:
        raise OrganizationNotFound(org)


async def list_projects(request: Request, org: str) -> JSONResponse:
    _org(org)
    return JSONResponse({"items": [{"id": p, "name": p, "organizationId": org} for p in _projects_of(request)]})


async def get_project(request: Request, org: str, project: str) -> JSONResponse:
    _org(org)
    if project not in _projects_of(request):
        raise ProjectNotFound(project)
    return JSONResponse({"id": project, "name": project, "organizationId": org})


FLAT_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/health", health),
    ("POST", "/keys", create_key),
    ("GET", "/keys", list_keys),
    ("DELETE", "/keys/{key_id}", revoke_key),
    ("GET", "/quotas/{project}", get_quota),
    ("PUT", "/quotas/{project}", set_quota),
    ("GET", "/audit", audit_log),
    ("POST", "/platform/v1/keys/introspect", introspect_key),
    ("GET", "/platform/v1/organizations", list_organizations),
    ("GET", "/platform/v1/organizations/{org}/projects", list_projects),
    ("GET", "/platform/v1/organizations/{org}/projects/{project}", get_project),
]
ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/secrets", list_secrets),
    ("PUT", "/secrets/{name}", set_secret),
    ("DELETE", "/secrets/{name}", delete_secret),
]

