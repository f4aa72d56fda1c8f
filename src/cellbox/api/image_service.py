"""Tensorlake's CAS Image Service (``{api}/images/v4``), served on our buildah builds.

This is what the tensorlake SDK's ``Image(...).build()`` calls by default (0.5.163; its
Rust core, ``image_service_builds.rs``), recovered from its requests against this
server (docs/from-tensorlake.md has the log):

* ``GET /images/name/{name}``: the Dockerfile's ``FROM`` looked up as a catalog name
  (our images, as the project may see them); a miss means "pull it from a registry";
* ``POST /builds`` ``{kind, name, dockerfile_path, build_args, parents, ...}`` → the
  build, with ``context_upload {url, max_bytes}``;
* ``PUT`` that URL (no key: ``api/cas_builds.py`` says why) with the context tar;
* ``POST /builds/{id}/context/seal {digest}`` → the tar's sha256 is checked, the build
  starts (``ImageManager.build``, the same path as ``POST /images/build``);
* ``GET /builds/{id}`` until ``succeeded`` (``image_id``) or ``failed`` (``error``),
  ``POST /builds/{id}/cancel``; ``GET /images/{image_id}`` → the published image.

The image is then an ordinary cellbox image of that name: ``Sandbox.create(image=…)``
boots it. An image's ID is ``sha256(name NUL digest)``: stable per name and content,
new on a rebuild (Tensorlake's rule: a name and its ID name the *current* image).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from ..errors import CellboxError, ImageNotFound, InvalidContext, InvalidRequest, PayloadTooLarge
from ..images.build import BuildRequest, validate
from ..manager.images import ImageInfo
from . import image_access as access
from .cas_builds import TERMINAL, Build, BuildInProgress, Builds
from .images import MAX_CONTEXT, _exists, _images, check_bases, extract_context
from .models import _Model

log = logging.getLogger(__name__)
PREFIX = "/images/v4"
UPLOAD_PREFIX = PREFIX + "/uploads/"  # the capability URLs: no key (api/auth.py lets them through)
MAX_LINES = 200  # build output lines kept per build
POLL_HOLD = 20.0  # seconds a poll of a running build waits for its end (long poll)


def _builds(request: Request) -> Builds:
    return request.app.state.cas_builds  # type: ignore[no-any-return]


def _project(request: Request) -> str:
    project: str = request.scope.get("state", {}).get("project") or "default"
    return project


def image_id(info: ImageInfo) -> str:
    return hashlib.sha256(f"{info.name}\0{info.digest or info.snapshot_id or ''}".encode()).hexdigest()


def _wire_image(info: ImageInfo) -> dict[str, Any]:
    """``ImageServiceImage`` (snake_case), which the SDK turns into its template shape."""
    iid = image_id(info)
    return {"id": iid, "image_id": iid, "name": info.name, "snapshot_id": info.snapshot_id or iid,
            "global": False, "physical_size_bytes": info.size_bytes or 0,
            "logical_size_bytes": info.size_bytes or 0, "created_at": _iso(info.created_at),
            "updated_at": _iso(info.created_at)}


def _iso(ms: int | None) -> str:
    return datetime.datetime.fromtimestamp((ms or 0) / 1000, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _visible_image(request: Request, name: str) -> ImageInfo:
    access.check_visible(request, name)
    return _images(request).describe(name)


async def lookup_name(request: Request, name: str) -> JSONResponse:
    """A name as the project sees it; 404 (the SDK then pulls from a registry)."""
    return JSONResponse(_wire_image(_visible_image(request, name)))


async def get_image(request: Request, image_id_: str) -> JSONResponse:
    for info in _images(request).list():
        if image_id(info) == image_id_ and access.visible(request, info.name):
            return JSONResponse(_wire_image(info))
    raise ImageNotFound(image_id_)


async def delete_name(request: Request, name: str) -> JSONResponse:
    """``delete_sandbox_image(name)``: our ``DELETE /images/{name}`` (409 while in use)."""
    access.check_change(request, name)
    await _images(request).remove(name)
    access.forget(request, name)
    return JSONResponse({})


async def list_images(request: Request) -> JSONResponse:
    items = [_wire_image(i) for i in _images(request).list() if access.visible(request, i.name)]
    return JSONResponse({"images": items, "next": None})


class Parent(_Model):
    """A ``FROM`` the SDK resolved through ``GET /images/name/…`` (0.5.163 sends ``public_id``)."""

    reference: str = Field(..., min_length=1, max_length=512)
    public_id: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    image_id: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @property
    def pin(self) -> str:
        pin = self.public_id or self.image_id
        if pin is None:
            raise InvalidRequest(f"parents: {self.reference!r} has no public_id")
        return pin


class BuildBody(_Model):
    """The SDK's build request; fields of Tensorlake's cloud we cannot honour are
    accepted and ignored (``image_scope``: images are the project's, ``builder_resources``:
    buildah runs on the host, ``registry_credentials_json``: use ``cellbox image pull``)."""

    kind: str = Field(..., pattern=r"^(dockerfile|import)$")
    name: str = Field(..., min_length=1, max_length=255)
    dockerfile_path: str = Field("Dockerfile", min_length=1, max_length=1024)
    build_args: dict[str, str] = Field(default_factory=dict, max_length=256)
    parents: list[Parent] = Field(default_factory=list, max_length=8)
    image_ref: str | None = Field(None, min_length=1, max_length=512)
    image_scope: str | None = Field(None, max_length=32)
    disk_mb: int | None = Field(None, ge=1, le=1 << 20)
    builder_resources: dict[str, Any] | None = None
    registry_credentials_json: str | None = Field(None, max_length=65536)


async def create_build(request: Request, body: Annotated[BuildBody, Body()],
                       idempotency_key: Annotated[str | None, Header(max_length=256)] = None) -> JSONResponse:
    images = _images(request)
    access.check_new_name(request, body.name, _exists(images, body.name))
    if body.kind == "import" and not body.image_ref:
        raise InvalidRequest("image_ref: an import build names the registry image")
    for parent in body.parents:  # a pin must name an image this project may boot
        if image_id(_visible_image(request, parent.reference)) != parent.pin:
            raise ImageNotFound(f"{parent.reference} (cas-v1:{parent.pin})")
    build = Build(build_id="build_" + secrets.token_hex(12), project=_project(request), name=body.name, kind=body.kind,
                  dockerfile_path=body.dockerfile_path, build_args=dict(body.build_args),
                  parents=[p.model_dump() for p in body.parents], image_ref=body.image_ref,
                  idempotency_key=idempotency_key)
    try:
        build = _builds(request).admit(build)
    except BuildInProgress as exc:
        return JSONResponse(exc.to_dict(), status_code=409)
    if build.kind == "import" and build.status == "pending":
        _start(request, build)
    out = build.to_wire()
    if build.kind == "dockerfile":
        url = str(request.base_url).rstrip("/") + f"{UPLOAD_PREFIX}{build.build_id}/{build.token}"
        out["context_upload"] = {"url": url, "method": "PUT", "max_bytes": MAX_CONTEXT}
    return JSONResponse(out, status_code=201)


async def upload_context(request: Request, build_id: str, token: str) -> JSONResponse:
    """The context tar, to the URL the build was given (the URL is the credential)."""
    build = _builds(request).by_token(build_id, token)
    if build.phase != "awaiting_context":
        raise InvalidRequest(f"build {build_id}: the context was already sealed")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_CONTEXT:
        raise PayloadTooLarge("the build context", MAX_CONTEXT >> 20)
    fd, name = tempfile.mkstemp(prefix="cas-context-", suffix=".tar", dir=_images(request).tools.tmp_dir())
    archive, digest, size = Path(name), hashlib.sha256(), 0
    try:
        with open(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_CONTEXT:
                    raise PayloadTooLarge("the build context", MAX_CONTEXT >> 20)
                digest.update(chunk)
                f.write(chunk)
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    if build.archive is not None:
        build.archive.unlink(missing_ok=True)  # a retried upload replaces the first
    build.archive, build.digest = archive, digest.hexdigest()
    return JSONResponse({"size": size, "digest": build.digest})


class SealBody(_Model):
    digest: str = Field(..., pattern=r"^(sha256:)?[0-9a-f]{64}$")


async def seal_context(request: Request, build_id: str, body: Annotated[SealBody, Body()]) -> JSONResponse:
    build = _builds(request).get(build_id, _project(request))
    if build.phase != "awaiting_context":
        raise InvalidRequest(f"build {build_id}: the context was already sealed")
    if build.archive is None or build.digest is None:
        raise InvalidContext("no context was uploaded to this build's upload URL")
    if body.digest.removeprefix("sha256:") != build.digest:
        raise InvalidContext(f"the uploaded context's sha256 is {build.digest}, not {body.digest}")
    build.set(phase="starting_builder")
    _start(request, build)
    return JSONResponse(build.to_wire())


async def get_build(request: Request, build_id: str) -> JSONResponse:
    """The build's state; a running build's answer is held until it ends, up to
    ``POLL_HOLD`` seconds (the SDK polls every 3 s: without the hold a 1 s build took
    3 s more to be seen, bench/tl_image_build.py)."""
    build = _builds(request).get(build_id, _project(request))
    if build.status == "running":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(build.done.wait(), POLL_HOLD)
    return JSONResponse(build.to_wire())


class CancelBody(_Model):
    build_id: str = Field(..., min_length=1, max_length=128)


async def cancel_build(request: Request, body: Annotated[CancelBody, Body()]) -> JSONResponse:
    """Cancel a build (``POST /builds/cancel {build_id}``): one waiting for its context
    is dropped; a running one's job is cancelled, which kills buildah's process group
    and undoes the half-made image (as at server stop, ``ImageCatalog.close``)."""
    build = _builds(request).get(body.build_id, _project(request))
    outcome = {"succeeded": "already_completed", "failed": "already_failed",
               "cancelled": "already_cancelled"}.get(build.status, "cancelled")
    if build.status not in TERMINAL:
        build.set(status="cancelled", phase="finished", error="cancelled by the client")
        if build.task is not None:
            build.task.cancel()
    return JSONResponse({"outcome": outcome, "build": build.to_wire()})


def _start(request: Request, build: Build) -> None:
    build.set(status="running", phase="executing")
    build.task = _images(request).spawn(_run(request, build))


async def _run(request: Request, build: Build) -> None:
    """The build job: unpack the sealed context, check it as ``POST /images/build`` does,
    run buildah; every failure ends as ``failed`` with the reason, nothing half-made."""
    images = _images(request)
    tmp = Path(tempfile.mkdtemp(prefix="cas-build-", dir=images.tools.tmp_dir()))

    def on_line(line: str) -> None:
        build.lines = [*build.lines[-(MAX_LINES - 1):], line]

    try:
        info = await (_import if build.kind == "import" else _dockerfile)(request, build, tmp, on_line)
        access.record(request, info.name)
        build.image_id, build.result = image_id(info), _wire_image(info)
        build.set(status="succeeded", phase="finished")
    except asyncio.CancelledError:
        build.set(status="cancelled", phase="finished", error="cancelled")
        raise
    except CellboxError as exc:
        build.set(status="failed", phase="finished", error=exc.message)
    except Exception as exc:  # noqa: BLE001 - reported to the client, logged here
        log.exception("CAS build %s failed", build.build_id, exc_info=exc)
        build.set(status="failed", phase="finished", error=f"internal error: {type(exc).__name__}: {exc}")
    finally:
        if build.archive is not None:
            build.archive.unlink(missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _dockerfile(request: Request, build: Build, tmp: Path, on_line: Any) -> ImageInfo:
    assert build.archive is not None
    return await _build_checked(request, build, await extract_context(build.archive, tmp), on_line)


async def _build_checked(request: Request, build: Build, context: Path, on_line: Any) -> ImageInfo:
    req = BuildRequest(name=build.name, context=context, dockerfile=build.dockerfile_path,
                       build_args=build.build_args)
    check_bases(request, validate(req), build.build_args)  # another project's private image: not a base
    return await _images(request).build(req, on_line)


async def _import(request: Request, build: Build, tmp: Path, on_line: Any) -> ImageInfo:
    """``tl sbx image import REF``: a one-line Dockerfile build (``FROM REF``), so the
    image gets the client's name and the pull takes our usual path (mirror, checks)."""
    assert build.image_ref is not None
    if any(c in build.image_ref for c in "\n\r \t"):
        raise InvalidRequest("image_ref: one image reference, no whitespace")
    context = tmp / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {build.image_ref}\n")
    build.dockerfile_path = "Dockerfile"
    return await _build_checked(request, build, context, on_line)


def router() -> APIRouter:
    r = APIRouter()
    for method, path, handler in (
        ("GET", "/images/name/{name:path}", lookup_name),
        ("DELETE", "/images/name/{name:path}", delete_name),
        ("GET", "/images", list_images),
        ("GET", "/images/{image_id_}", get_image),
        ("POST", "/builds", create_build),
        ("GET", "/builds/{build_id}", get_build),
        ("POST", "/builds/{build_id}/context/seal", seal_context),
        ("POST", "/builds/cancel", cancel_build),
        ("PUT", "/uploads/{build_id}/{token}", upload_context),
    ):
        r.add_api_route(PREFIX + path, handler, methods=[method])
    return r
