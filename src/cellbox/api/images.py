"""Image routes: build (a tar of the context as the body), pull, register, pre-boot,
list, describe, remove; and Tensorlake's template catalog (spec §5).

Build and pull answer with a stream of JSON lines (``application/x-ndjson``) so the
client shows progress while buildah or skopeo works: ``{"line": "..."}`` for each
line of output, then one ``{"image": {...}}`` or ``{"error", "code", "status"}`` (the
status the error would have had as a plain answer).
Everything that can be checked before the work starts (name, Dockerfile, build args,
the context archive) is checked first and answered as a plain 4xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from ..errors import AdminRequired, CellboxError, ImageNotFound, InvalidContext, InvalidRequest, PayloadTooLarge
from ..images.build import BuildRequest, base_images, validate
from ..manager.images import ImageInfo, ImageManager
from . import image_access as access
from .models import _Model

log = logging.getLogger(__name__)
MAX_CONTEXT = 4 << 30  # bytes of build context a request may upload
BUILD_PATH_SUFFIX = "/images/build"


def _images(request: Request) -> ImageManager:
    return request.app.state.service.manager.image_manager  # type: ignore[no-any-return]


def _info(info: ImageInfo) -> dict[str, Any]:
    return info.to_dict()


def _exists(images: ImageManager, name: str) -> bool:
    try:
        images.describe(name)
    except CellboxError:
        return False
    return True


class PullRequest(_Model):
    image: str = Field(..., min_length=1, max_length=255, description="HOST[:PORT]/NAME[:TAG|@sha256:...]")
    username: str | None = Field(None, max_length=1024)
    password: str | None = Field(None, max_length=4096)
    preboot: bool = False
    warmup: list[str] | None = Field(None, min_length=1, max_length=256)


class RegisterRequest(_Model):
    name: str = Field(..., min_length=1, max_length=255)
    snapshot_id: str = Field(..., min_length=1, max_length=128)
    preboot: bool = False
    warmup: list[str] | None = Field(None, min_length=1, max_length=256)


class PrebootRequest(_Model):
    warmup: list[str] | None = Field(None, min_length=1, max_length=256)


class WarmPoolRequest(_Model):
    size: int = Field(..., ge=0, le=16, description="running sandboxes of the image kept ready")


class TemplateRequest(_Model):
    """Tensorlake's register body (camelCase, spec §5); only name and snapshotId matter here."""

    name: str = Field(..., min_length=1, max_length=255)
    snapshotId: str = Field(..., min_length=1, max_length=128)


def _stream(
    images: ImageManager, work: Callable[[Callable[[str], None]], Awaitable[ImageInfo]]
) -> StreamingResponse:
    """Run ``work`` in the background, streaming its progress lines and its outcome."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def on_line(line: str) -> None:
        queue.put_nowait({"line": line})

    async def runner() -> None:
        try:
            info = await work(on_line)
            queue.put_nowait({"image": _info(info)})
        except CellboxError as exc:
            queue.put_nowait({**exc.to_dict(), "status": exc.status})
        except Exception as exc:  # noqa: BLE001 - reported in the stream, logged here
            log.exception("image job failed", exc_info=exc)
            queue.put_nowait({"error": f"internal error: {type(exc).__name__}: {exc}", "code": "INTERNAL",
                              "status": 500})
        finally:
            queue.put_nowait(None)

    # The job goes on if the client goes away: stopping buildah half-way would leave
    # its containers behind; it cleans up after itself when it ends. Server stop waits
    # for it (ImageManager.close).
    images.spawn(runner())

    async def body() -> AsyncIterator[bytes]:
        while (item := await queue.get()) is not None:
            yield (json.dumps(item) + "\n").encode()

    return StreamingResponse(body(), media_type="application/x-ndjson")


async def build_image(
    request: Request,
    name: Annotated[str, Query(min_length=1, max_length=255, description="the image's name")],
    dockerfile: Annotated[str, Query(min_length=1, max_length=1024)] = "Dockerfile",
    build_arg: Annotated[list[str] | None, Query(description="K=V, repeatable")] = None,
    target: Annotated[str | None, Query(max_length=128)] = None,
    no_cache: bool = False,
    preboot: bool = False,
    warmup: Annotated[list[str] | None, Query(description="warm-up argv, one item per parameter")] = None,
) -> StreamingResponse:
    """Build a Dockerfile. Body: a tar (optionally gzip) of the build context."""
    args: dict[str, str] = {}
    for item in build_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"build_arg: expected K=V, got {item!r}")
        args[key] = value
    images = _images(request)
    access.check_new_name(request, name, _exists(images, name))  # issue 12: images per project
    tmp = Path(tempfile.mkdtemp(prefix="context-", dir=images.tools.tmp_dir()))
    try:
        context = await _receive_context(request, tmp)
        req = BuildRequest(name=name, context=context, dockerfile=dockerfile, build_args=args, target=target,
                           no_cache=no_cache)
        check_bases(request, validate(req), args)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    async def work(on_line: Callable[[str], None]) -> ImageInfo:
        try:
            info = await images.build(req, on_line, preboot=preboot, warmup=warmup)
            access.record(request, info.name)
            return info
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    return _stream(images, work)


def check_bases(request: Request, dockerfile: Path, build_args: dict[str, str]) -> None:
    """Every ``FROM`` must be an image the project may boot: another project's private
    image is not a base (the same 400 as a name nobody has)."""
    for base in base_images(dockerfile.read_text(errors="replace"), build_args):
        if not access.visible(request, base):
            raise ImageNotFound(base, base_of=True)


async def _receive_context(request: Request, tmp: Path) -> Path:
    """Save the uploaded archive and unpack it, refusing anything that would land
    outside the context (``_safe_members``)."""
    archive = tmp / "context.tar"
    size = 0
    with open(archive, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_CONTEXT:
                raise PayloadTooLarge("the build context", MAX_CONTEXT >> 20)
            f.write(chunk)
    if size == 0:
        raise InvalidContext("send the build context as a tar archive")
    try:
        return await extract_context(archive, tmp)
    finally:
        archive.unlink(missing_ok=True)


async def extract_context(archive: Path, tmp: Path) -> Path:
    """Unpack a context tar into ``tmp/context`` (also the CAS view's, api/image_service.py)."""
    if archive.stat().st_size == 0:
        raise InvalidContext("send the build context as a tar archive")
    context = tmp / "context"
    context.mkdir()

    def extract() -> None:
        with tarfile.open(archive) as tar:
            tar.extractall(context, members=_safe_members(tar, context))

    try:
        await asyncio.to_thread(extract)
    except (tarfile.TarError, OSError) as exc:
        raise InvalidContext(f"the build context is not a usable tar archive: {exc}") from None
    return context


def _safe_members(tar: tarfile.TarFile, root: Path) -> list[tarfile.TarInfo]:
    """What tarfile's ``data`` filter (Python >= 3.11.4; Debian 12 has 3.11.2) refuses,
    refused here: absolute names, ``..``, links leading out of the context, devices."""
    base = os.path.realpath(root)
    out = []
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(base, member.name))
        if member.name.startswith("/") or not (target == base or target.startswith(base + os.sep)):
            raise InvalidContext(f"the build context has a path outside it: {member.name!r}")
        if member.issym() or member.islnk():
            origin = os.path.dirname(target) if member.issym() else base
            link = os.path.realpath(os.path.join(origin, member.linkname))
            if member.linkname.startswith("/") or not (link == base or link.startswith(base + os.sep)):
                raise InvalidContext(f"the build context has a link leading out of it: {member.name!r}")
        elif not (member.isfile() or member.isdir()):
            raise InvalidContext(f"the build context has a device or fifo: {member.name!r}")
        member.mode &= 0o777  # no setuid/setgid bits from an upload
        member.uid = member.gid = 0
        member.uname = member.gname = "root"
        out.append(member)
    return out


async def pull_image(request: Request, body: Annotated[PullRequest, Body()]) -> StreamingResponse:
    """Pull from a registry (with optional credentials, remembered per registry)."""
    from ..images import refs

    ref = refs.parse(body.image)
    if not ref.is_remote:
        raise InvalidRequest(f"image: {body.image!r} is not a registry reference (HOST[:PORT]/NAME[:TAG])")
    if (body.username is None) != (body.password is None):
        raise InvalidRequest("username and password go together")
    images = _images(request)
    access.check_new_name(request, body.image, _exists(images, body.image))

    async def work(on_line: Callable[[str], None]) -> ImageInfo:
        info = await images.pull(body.image, username=body.username, password=body.password, on_line=on_line,
                                 preboot=body.preboot, warmup=body.warmup)
        access.record(request, info.name)
        return info

    return _stream(images, work)


async def register_image(request: Request, body: Annotated[RegisterRequest, Body()]) -> JSONResponse:
    """Name a completed snapshot (a memory snapshot makes a pre-booted image)."""
    access.check_new_name(request, body.name, _exists(_images(request), body.name))
    info = await _images(request).register(body.name, body.snapshot_id, namespace=_namespace(request),
                                           preboot=body.preboot, warmup=body.warmup)
    access.record(request, info.name)
    return JSONResponse(_info(info))


async def preboot_image(request: Request, name: str, body: Annotated[PrebootRequest | None, Body()] = None) -> JSONResponse:
    """Give an image a memory snapshot of a booted sandbox (after the warm-up command)."""
    access.check_change(request, name)
    info = await _images(request).preboot(name, (body.warmup if body else None))
    return JSONResponse(_info(info))


async def set_warm_pool(request: Request, name: str, body: Annotated[WarmPoolRequest, Body()]) -> JSONResponse:
    """Keep ``size`` running sandboxes of the image ready; creates claim them."""
    access.check_change(request, name)
    return JSONResponse(_info(await _images(request).set_warm_pool(name, body.size)))


async def prune_images(request: Request) -> JSONResponse:
    """Drop the build cache and whatever no image uses (every project's: admins only)."""
    if (p := request.scope.get("state", {}).get("principal")) is not None and not p.is_admin:
        raise AdminRequired()
    return JSONResponse({"pruned_cache_images": await _images(request).prune()})


async def list_images(request: Request) -> JSONResponse:
    return JSONResponse({"images": [_info(i) for i in _images(request).list() if access.visible(request, i.name)]})


async def get_image(request: Request, name: str) -> JSONResponse:
    access.check_visible(request, name)
    return JSONResponse(_info(_images(request).describe(name)))


async def delete_image(request: Request, name: str) -> JSONResponse:
    """Remove an image; 409 while a sandbox uses it."""
    access.check_change(request, name)
    await _images(request).remove(name)
    access.forget(request, name)
    return JSONResponse({})


# -- Tensorlake's template catalog (spec §5) ----------------------------------------------


def _template(info: ImageInfo) -> dict[str, Any]:
    return {
        "id": info.name, "name": info.name, "snapshotId": info.snapshot_id or info.memory_snapshot_id,
        "snapshotSandboxId": None, "snapshotUri": None, "snapshotFormatVersion": None,
        "snapshotSizeBytes": info.size_bytes, "rootfsDiskBytes": info.size_bytes, "rootfsNodeKind": info.kind,
        "public": False,
    }


async def list_templates(request: Request) -> JSONResponse:
    items = [_template(i) for i in _images(request).list() if access.visible(request, i.name)]
    return JSONResponse({"items": items, "next": None})


async def get_template(request: Request, name: str) -> JSONResponse:
    access.check_visible(request, name)
    return JSONResponse(_template(_images(request).describe(name)))


async def delete_template(request: Request, name: str) -> JSONResponse:
    access.check_change(request, name)
    await _images(request).remove(name)
    access.forget(request, name)
    return JSONResponse({})


async def delete_template_by_name(request: Request, name: str) -> JSONResponse:
    """``DELETE …/sandbox-templates/by-name/{name}`` (what ``delete_sandbox_image`` sends)."""
    return await delete_template(request, name)


async def register_template(request: Request, body: Annotated[TemplateRequest, Body()]) -> JSONResponse:
    access.check_new_name(request, body.name, _exists(_images(request), body.name))
    info = await _images(request).register(body.name, body.snapshotId, namespace=_namespace(request))
    access.record(request, info.name)
    return JSONResponse(_template(info))


def _namespace(request: Request) -> str:
    """The request's project: fixed by the front door (``api/auth.py``) from the key and
    the path; without the door (unit tests) the path's namespace, flat paths ``default``."""
    project = request.scope.get("state", {}).get("project")
    return project or request.path_params.get("namespace", "default")  # type: ignore[no-any-return]


ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/images", list_images),
    ("POST", "/images/build", build_image),
    ("POST", "/images/pull", pull_image),
    ("POST", "/images/register", register_image),
    ("POST", "/images/prune", prune_images),
    ("POST", "/images/{name:path}/preboot", preboot_image),
    ("PUT", "/images/{name:path}/warm-pool", set_warm_pool),
    ("GET", "/images/{name:path}", get_image),
    ("DELETE", "/images/{name:path}", delete_image),
    ("GET", "/sandbox-templates", list_templates),
    ("POST", "/sandbox-templates", register_template),
    ("GET", "/sandbox-templates/by-name/{name:path}", get_template),
    ("DELETE", "/sandbox-templates/by-name/{name:path}", delete_template_by_name),
    ("DELETE", "/sandbox-templates/{name:path}", delete_template),
]
# Tensorlake's own paths for the same catalog (what its Rust client sends with an API
# key, spec §5), served flat only. Not served: ``sandbox-template-builds`` (it hands
# the client a command for Tensorlake's private rootfs builder) and the CAS Image
# Service (``/images/v4``) that ``Image(...).build()`` uses by default: docs/api.md.
PLATFORM_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/platform/v1/sandbox-templates", list_templates),
    ("POST", "/platform/v1/sandbox-templates", register_template),
    ("GET", "/platform/v1/sandbox-templates/by-name/{name:path}", get_template),
    ("DELETE", "/platform/v1/sandbox-templates/by-name/{name:path}", delete_template_by_name),
    ("DELETE", "/platform/v1/sandbox-templates/{name:path}", delete_template),
]
