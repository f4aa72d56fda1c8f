"""State-changing console requests (POST, behind the gate's CSRF check).

Each parses its small form, builds the same request object the API would
(``api.models``: one validation for both doors), calls ``SandboxService`` for the
session's project, and answers an HTML fragment for the page's flash area. The
sandbox list needs no answer to refresh: its live feed shows the change.
"""

from __future__ import annotations

import time
from typing import Any

from markupsafe import Markup, escape
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..api.door import QUOTA_NAMES, KeyRequest, QuotaRequest, parse_lifetime
from ..api.errors import validation_message
from ..api.models import CreateSandboxRequest, UpdateSandboxRequest
from ..auth import keys as keymod
from ..errors import InvalidRequest, NotFound
from ..manager.records import SandboxRecord
from ..manager.snapshot_store import SnapshotType
from .context import door_of, project_of, render, require_admin, service_of
from .forms import many, one, read_form
from .pages import recent_keys

BULK_ACTIONS = ("terminate", "suspend", "resume")
MAX_CLONES = 16


def flash(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f'<p class="ok" role="status">{html}</p>', status_code=status)


def _link(rec: SandboxRecord) -> str:
    return f'<a href="/ui/sandboxes/{rec.id}">{escape(rec.name or rec.id)}</a>'


def _model(cls: type[Any], data: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(validation_message(exc.errors())) from None


def _number(form: dict[str, list[str]], name: str, kind: type = int) -> Any:
    text = one(form, name)
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise InvalidRequest(f"{name}: {text!r} is not a number") from None


def _network(form: dict[str, list[str]]) -> dict[str, Any] | None:
    allow, deny = many(form, "allow_out"), many(form, "deny_out")
    no_internet = one(form, "no_internet") == "on"
    if not (allow or deny or no_internet):
        return None
    return {"allow_internet_access": not no_internet, "allow_out": allow, "deny_out": deny}


async def create(request: Request) -> Response:
    form = await read_form(request)
    body: dict[str, Any] = {
        "image": one(form, "image") or None, "name": one(form, "name") or None,
        "timeout_secs": _number(form, "timeout_secs"), "wait": False,
        "resources": {"cpus": _number(form, "cpus", float), "memory_mb": _number(form, "memory_mb"),
                      "disk_mb": _number(form, "disk_mb")},
        "network": _network(form), "secret_names": many(form, "secrets") or None,
    }
    req = _model(CreateSandboxRequest, body)
    rec = await service_of(request).create(req.to_options(project_of(request)), wait=False, budget=None)
    return flash(f"creating {_link(rec)}")


async def _act(request: Request, action: str, ref: str) -> SandboxRecord:
    svc, project = service_of(request), project_of(request)
    if action == "terminate":
        return await svc.delete(ref, project)
    if action == "suspend":
        return (await svc.suspend(ref, project, wait_s=0.0))[0]
    if action == "resume":
        return (await svc.resume(ref, project, wait_s=0.0))[0]
    raise InvalidRequest(f"action: {action!r} is not one of {', '.join(BULK_ACTIONS)}")


async def one_action(request: Request) -> Response:
    rec = await _act(request, request.path_params["action"], request.path_params["sandbox_id"])
    return flash(f"{escape(request.path_params['action'])}: {_link(rec)} is {rec.status.value}")


async def bulk(request: Request) -> Response:
    form = await read_form(request)
    action, refs = one(form, "action"), form.get("ids", [])
    if action not in BULK_ACTIONS:
        raise InvalidRequest(f"action: {action!r} is not one of {', '.join(BULK_ACTIONS)}")
    if not refs:
        raise InvalidRequest("ids: select at least one sandbox")
    done, failed = [], []
    for ref in refs[:1000]:
        try:
            done.append(await _act(request, action, ref))
        except (NotFound, InvalidRequest) as exc:
            failed.append(f"{escape(ref)}: {escape(exc.message)}")
    extra = f"; failed: {'; '.join(failed)}" if failed else ""
    return flash(f"{escape(action)}: {len(done)} sandbox(es){extra}")


async def snapshot(request: Request) -> Response:
    form = await read_form(request)
    kind = one(form, "type", "memory")
    if kind not in {t.value for t in SnapshotType}:
        raise InvalidRequest(f"type: {kind!r} is not filesystem or memory")
    snap = await service_of(request).snapshot(request.path_params["sandbox_id"], project_of(request), SnapshotType(kind))
    return render(request, "_snapshot_made.html", snap=snap)


async def clone(request: Request) -> Response:
    form = await read_form(request)
    times = _number(form, "times") or 1
    if not 1 <= times <= MAX_CLONES:
        raise InvalidRequest(f"times: 1..{MAX_CLONES}")
    _, copies = await service_of(request).copy(request.path_params["sandbox_id"], project_of(request), times)
    made = [_link(c) for c in copies if isinstance(c, SandboxRecord)]
    failed = [escape(c.message) for c in copies if not isinstance(c, SandboxRecord)]
    text = f"cloned: {', '.join(made) or 'none'}" + (f"; failed: {'; '.join(failed)}" if failed else "")
    return HTMLResponse(f'<p class="ok clones" role="status">{text}</p>', status_code=200 if not failed else 422)


async def restore(request: Request) -> Response:
    form = await read_form(request)
    body = {"snapshot_id": request.path_params["snapshot_id"], "name": one(form, "name") or None, "wait": False}
    req = _model(CreateSandboxRequest, body)
    opts = req.to_options(project_of(request))
    rec = await service_of(request).create(opts, wait=False, budget=None)
    return flash(f"restoring into {_link(rec)}")


async def delete_snapshot(request: Request) -> Response:
    snapshot_id = request.path_params["snapshot_id"]
    await service_of(request).delete_snapshot(snapshot_id, project_of(request))
    return flash(f"deleted snapshot {escape(snapshot_id)}")


async def network(request: Request) -> Response:
    form = await read_form(request)
    policy = _network(form) or {"allow_internet_access": True, "allow_out": [], "deny_out": []}
    req = _model(UpdateSandboxRequest, {"network": policy})
    rec = await service_of(request).update(request.path_params["sandbox_id"], project_of(request), req.to_changes())
    return flash(f"network policy of {_link(rec)} updated")


async def create_key(request: Request) -> Response:
    require_admin(request)
    form = await read_form(request)
    body = _model(KeyRequest, {"project": one(form, "project", "default"), "role": one(form, "role", "member"),
                               "expires": one(form, "expires") or None, "name": one(form, "name") or None})
    expires_at = int((time.time() + parse_lifetime(body.expires)) * 1000) if body.expires else None
    key_id, full, key_hash = keymod.new_key()
    door_of(request).store.add_key(key_id, key_hash, body.project, body.role, name=body.name, expires_at=expires_at)
    return render(request, "keys.html", keys=recent_keys(request), new_key=full)


async def set_quota(request: Request) -> Response:
    """Admins: an empty field removes that limit (as ``null`` does in the API)."""
    require_admin(request)
    project = request.path_params["project"]
    form = await read_form(request)
    body = _model(QuotaRequest, {n: (one(form, n) or None) for n in QUOTA_NAMES if n in form})
    store = door_of(request).store
    _model(KeyRequest, {"project": project})  # the same project-name rule as keys
    limits: dict[str, Any] = store.get_quota(project)
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None:
            limits.pop(name, None)
        else:
            limits[name] = value
    store.set_quota(project, limits)
    return flash(f"quotas of {escape(project)}: {escape(', '.join(f'{k}={v:g}' for k, v in limits.items()) or 'none')}")


async def revoke_key(request: Request) -> Response:
    require_admin(request)
    key_id = request.path_params["key_id"]
    door = door_of(request)
    if keymod.parse(f"cbx_{key_id}_{'0' * 64}") is None or door.store.get_key(key_id) is None:
        raise NotFound(f"key {key_id!r} not found", code="KEY_NOT_FOUND")
    door.store.revoke_key(key_id)
    door.auth.forget(key_id)
    return render(request, "keys.html", keys=recent_keys(request), new_key=None,
                  message=Markup(f"revoked {escape(key_id)}"))


ROUTES = [
    Route("/ui/sandboxes", create, methods=["POST"]),
    Route("/ui/sandboxes/bulk", bulk, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/snapshot", snapshot, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/clone", clone, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/network", network, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/{action:str}", one_action, methods=["POST"]),
    Route("/ui/snapshots/{snapshot_id}/restore", restore, methods=["POST"]),
    Route("/ui/snapshots/{snapshot_id}/delete", delete_snapshot, methods=["POST"]),
    Route("/ui/keys", create_key, methods=["POST"]),
    Route("/ui/usage/{project}/quota", set_quota, methods=["POST"]),
    Route("/ui/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
]
