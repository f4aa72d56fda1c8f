"""E2B's control-plane REST API under ``/e2b`` on the lifecycle app (``E2B_API_URL=
http(s)://HOST:8900/e2b``), mapped onto ``SandboxService``.

Keys: a cellbox key in ``X-API-KEY`` (E2B's header; ``api/auth.py`` reads it on these
paths), with the same project scoping: another project's sandbox is a 404. Mapping:
templates are our images (``base``: the default image); ``timeout`` is our
``timeout_secs`` moved to "now + timeout"; pause/resume are suspend/resume (a sandbox
must be named to be suspended: an unnamed one gets the name ``e2b-<id>`` at its
first pause, after which an idle timeout suspends it instead of ending it, which is
E2B's auto-pause). Errors are E2B's ``{"code": status, "message": …}``.
"""

from __future__ import annotations

import functools
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..errors import CellboxError, InvalidRequest, NotFound
from .manager_api import Changes, CreateOptions, CreateSpec, SandboxRecord, SandboxService, Status, images
from . import network as e2b_network
from . import records, render
from .tokens import TokenKey

PREFIX = "/e2b"
DEFAULT_TIMEOUT = 300  # E2B's default sandbox timeout, seconds
MAX_TIMEOUT = 86_400 * 30
MAX_META = 64  # metadata / envVars entries
Handler = Callable[..., Awaitable[Response]]


class E2BRest:
    """What the handlers need besides the service: the token key and the domain."""

    def __init__(self, tokens: TokenKey, domain: str) -> None:
        self.tokens = tokens
        self.domain = domain

    def traffic_token(self, sandbox_id: str) -> str:
        return self.tokens.token(f"traffic:{sandbox_id}")

    def sandbox(self, rec: SandboxRecord) -> dict[str, Any]:
        return render.sandbox(rec, self.tokens.token(rec.id), self.traffic_token(rec.id), self.domain)


def _err(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def _e2b_errors(handler: Handler) -> Handler:
    """Our errors in E2B's error shape (its SDK reads ``message``)."""

    @functools.wraps(handler)  # FastAPI reads the wrapped signature (path parameters)
    async def wrapped(request: Request, **kw: Any) -> Response:
        try:
            return await handler(request, **kw)
        except CellboxError as exc:
            return _err(exc.status, f"{exc.code}: {exc.message}")

    return wrapped


def _svc(request: Request) -> SandboxService:
    return request.app.state.service  # type: ignore[no-any-return]


def _view(request: Request) -> E2BRest:
    return request.app.state.e2b  # type: ignore[no-any-return]


def _project(request: Request) -> str:
    state = request.scope.get("state") or {}
    return str(state.get("project", "default"))


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"body: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("body: must be a JSON object")
    return doc


def _timeout(doc: dict[str, Any], default: int | None = DEFAULT_TIMEOUT) -> int | None:
    value = doc.get("timeout", default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TIMEOUT:
        raise InvalidRequest(f"timeout: whole seconds between 1 and {MAX_TIMEOUT}, got {value!r}")
    return value


def _str_map(doc: dict[str, Any], key: str) -> dict[str, str]:
    value = doc.get(key) or {}
    if not isinstance(value, dict) or len(value) > MAX_META or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 256 and len(v) <= 4096 for k, v in value.items()):
        raise InvalidRequest(f"{key}: an object of at most {MAX_META} string values")
    return value


def _live(request: Request, sandbox_id: str) -> SandboxRecord:
    rec = _svc(request).get(sandbox_id, _project(request))
    if rec.status.is_final:  # E2B: a killed sandbox is not found
        raise NotFound(f"sandbox {sandbox_id!r} not found", code="SANDBOX_NOT_FOUND")
    return rec


@_e2b_errors
async def create(request: Request) -> Response:
    """POST /sandboxes and /v2/sandboxes: create and wait until it runs."""
    doc = await _body(request)
    template = doc.get("templateID")
    if not isinstance(template, str) or not template or len(template) > 255:
        raise InvalidRequest("templateID: required, a template (image) name")
    timeout, meta, env = _timeout(doc), _str_map(doc, "metadata"), _str_map(doc, "envVars")
    _, network = e2b_network.parse(doc.get("network"), doc.get("allow_internet_access"))
    svc = _svc(request)
    image, snapshot = _template(svc, template, _project(request))
    spec = CreateSpec(image=image, namespace=_project(request), timeout_secs=timeout, network=network)
    rec = await svc.create(CreateOptions(spec=spec, snapshot_id=snapshot), wait=True, budget=None)
    rec = svc.get(rec.id, _project(request))
    if rec.status != Status.RUNNING:
        raise CellboxError(f"sandbox {rec.id} did not start: {rec.error or rec.status.value}", code="CREATE_FAILED")
    rec = records.set_extra(svc, rec, {render.META_KEY: meta, render.TEMPLATE_KEY: template, records.ENV_KEY: env})
    return JSONResponse(_view(request).sandbox(rec), status_code=201)


def _template(svc: SandboxService, template: str, project: str) -> tuple[str | None, str | None]:
    """(image, snapshot ID) for a templateID: ``base``, a snapshot of the project (E2B's
    snapshots are templates), or an image name (unknown: the create's own 404)."""
    if template in (render.DEFAULT_TEMPLATE, render.CODE_INTERPRETER_TEMPLATE):
        return None, None
    try:
        return None, svc.get_snapshot(template, project).id
    except CellboxError:
        return template, None


def _metadata_filter(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    return dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))


@_e2b_errors
async def list_sandboxes(request: Request) -> Response:
    """GET /sandboxes and /v2/sandboxes (``state``, ``metadata``, ``limit`` filters)."""
    q = request.query_params
    states = {s for s in (q.get("state") or "running,paused").split(",") if s}
    if bad := states - {"running", "paused"}:
        raise InvalidRequest(f"state: running or paused, not {sorted(bad)}")
    limit = q.get("limit") or "1000"
    if not limit.isdigit() or not 0 < int(limit) <= 10_000:
        raise InvalidRequest("limit: 1..10000")
    want = _metadata_filter(q.get("metadata"))
    page = _svc(request).list(_project(request), statuses=None, live_only=True, cursor=None, limit=10_000)
    out = []
    for rec in page.records:
        meta = rec.extra.get(render.META_KEY) or {}
        if render.state(rec) in states and all(meta.get(k) == v for k, v in want.items()):
            out.append(render.listed(rec))
    return JSONResponse(out[: int(limit)])


@_e2b_errors
async def get_sandbox(request: Request, sandbox_id: str) -> Response:
    rec = _live(request, sandbox_id)
    view = _view(request)
    return JSONResponse(render.detail(rec, view.tokens.token(rec.id), view.domain))


@_e2b_errors
async def kill(request: Request, sandbox_id: str) -> Response:
    _live(request, sandbox_id)
    await _svc(request).delete(sandbox_id, _project(request))
    return Response(status_code=204)


@_e2b_errors
async def set_timeout(request: Request, sandbox_id: str) -> Response:
    doc = await _body(request)
    if "timeout" not in doc:
        raise InvalidRequest("timeout: required (seconds from now)")
    records.set_timeout(_svc(request), _live(request, sandbox_id), _timeout(doc) or DEFAULT_TIMEOUT)
    return Response(status_code=204)


@_e2b_errors
async def refresh(request: Request, sandbox_id: str) -> Response:
    doc = await _body(request)
    seconds = doc.get("duration", 60)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 < seconds <= 3600:
        raise InvalidRequest("duration: 1..3600 seconds")
    records.set_timeout(_svc(request), _live(request, sandbox_id), seconds)
    return Response(status_code=204)


@_e2b_errors
async def pause(request: Request, sandbox_id: str) -> Response:
    svc, project = _svc(request), _project(request)
    rec = _live(request, sandbox_id)
    if rec.status in (Status.SUSPENDED, Status.SUSPENDING):
        return _err(409, f"sandbox {sandbox_id} is already paused")
    if not rec.name:  # only named sandboxes suspend (service.suspend)
        await svc.update(rec.id, project, Changes(name=f"e2b-{rec.id}"))
    await svc.suspend(rec.id, project, wait_s=None)
    return Response(status_code=204)


async def _wake(request: Request, sandbox_id: str, doc: dict[str, Any]) -> tuple[SandboxRecord, bool]:
    """Resume a paused sandbox (and apply the timeout); True if it was paused."""
    svc, project = _svc(request), _project(request)
    rec = _live(request, sandbox_id)
    was_paused = rec.status in (Status.SUSPENDED, Status.SUSPENDING)
    timeout = _timeout(doc, None)
    if was_paused:
        rec, _ = await svc.resume(rec.id, project, wait_s=None)
    if timeout is not None:
        rec = records.set_timeout(svc, rec, timeout)
    return svc.get(rec.id, project), was_paused


@_e2b_errors
async def resume(request: Request, sandbox_id: str) -> Response:
    rec = _live(request, sandbox_id)
    if rec.status not in (Status.SUSPENDED, Status.SUSPENDING):
        return _err(409, f"sandbox {sandbox_id} is not paused")
    rec, _ = await _wake(request, sandbox_id, await _body(request))
    return JSONResponse(_view(request).sandbox(rec), status_code=201)


@_e2b_errors
async def connect(request: Request, sandbox_id: str) -> Response:
    """POST /sandboxes/{id}/connect (and /v2/…): resume if paused; 201 then, else 200."""
    rec, resumed = await _wake(request, sandbox_id, await _body(request))
    return JSONResponse(_view(request).sandbox(rec), status_code=201 if resumed else 200)


@_e2b_errors
async def list_templates(request: Request) -> Response:
    return JSONResponse([render.template(i) for i in images(_svc(request))])


@_e2b_errors
async def update_network(request: Request, sandbox_id: str) -> Response:
    """PUT /sandboxes/{id}/network: replace the egress policy live (service.update)."""
    doc = await _body(request)
    _, policy = e2b_network.parse(doc, doc.get("allow_internet_access"))
    rec = _live(request, sandbox_id)
    await _svc(request).update(rec.id, _project(request), Changes(network_set=True, network=policy))
    return Response(status_code=204)


@_e2b_errors
async def template_alias(request: Request, alias: str) -> Response:
    """GET /templates/aliases/{alias} (``Template.exists``): is it an image of the catalog?"""
    if alias == render.DEFAULT_TEMPLATE:
        return JSONResponse({"templateID": alias, "public": True})
    names = {i.name for i in images(_svc(request))}
    if alias not in names:
        return _err(404, f"template {alias!r} not found")
    return JSONResponse({"templateID": alias, "public": True})


def router() -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)
    for path in ("/sandboxes", "/v2/sandboxes"):
        r.add_api_route(path, create, methods=["POST"], name=f"e2b_create{path.count('v2')}")
        r.add_api_route(path, list_sandboxes, methods=["GET"], name=f"e2b_list{path.count('v2')}")
    r.add_api_route("/sandboxes/{sandbox_id}", get_sandbox, methods=["GET"], name="e2b_get")
    r.add_api_route("/sandboxes/{sandbox_id}", kill, methods=["DELETE"], name="e2b_kill")
    r.add_api_route("/sandboxes/{sandbox_id}/timeout", set_timeout, methods=["POST"], name="e2b_timeout")
    r.add_api_route("/sandboxes/{sandbox_id}/refreshes", refresh, methods=["POST"], name="e2b_refresh")
    r.add_api_route("/sandboxes/{sandbox_id}/pause", pause, methods=["POST"], name="e2b_pause")
    r.add_api_route("/sandboxes/{sandbox_id}/resume", resume, methods=["POST"], name="e2b_resume")
    r.add_api_route("/sandboxes/{sandbox_id}/connect", connect, methods=["POST"], name="e2b_connect")
    r.add_api_route("/v2/sandboxes/{sandbox_id}/connect", connect, methods=["POST"], name="e2b_connect2")
    r.add_api_route("/sandboxes/{sandbox_id}/network", update_network, methods=["PUT"], name="e2b_network")
    r.add_api_route("/templates", list_templates, methods=["GET"], name="e2b_templates")
    r.add_api_route("/templates/aliases/{alias:path}", template_alias, methods=["GET"], name="e2b_template_alias")
    return r
