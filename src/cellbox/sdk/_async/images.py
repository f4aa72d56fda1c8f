"""Images through the lifecycle API: build (Dockerfile or :class:`~cellbox.Image`), pull,
register, pre-boot, list, describe and remove. Reached as ``client.images``."""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ImageNotFoundError, error_from_response, map_transport_errors, raise_for_status
from .._image import context_tar, dockerfile_into_context
from .._models import ImageInfo

if TYPE_CHECKING:
    from .client import AsyncSandboxClient

Progress = Callable[[str], None]
BUILD_TIMEOUT = 3600.0


class AsyncImages:
    def __init__(self, client: AsyncSandboxClient) -> None:
        self._client = client

    async def build(
        self,
        context: str | os.PathLike[str],
        name: str,
        *,
        dockerfile: str | os.PathLike[str] | None = None,
        build_args: Mapping[str, str] | None = None,
        target: str | None = None,
        no_cache: bool = False,
        preboot: bool = False,
        warmup: Sequence[str] | None = None,
        on_progress: Progress | None = None,
    ) -> ImageInfo:
        """Build the Dockerfile (default ``context/Dockerfile``) with ``context`` as its build
        context, under ``name``. ``on_progress`` gets each line of the builder's output.
        Raises :class:`ImageBuildError` if a step fails."""
        data, df_name = dockerfile_into_context(context_tar(context), Path(context), dockerfile)
        return await self.build_tar(data, name, dockerfile=df_name, build_args=build_args, target=target,
                                    no_cache=no_cache, preboot=preboot, warmup=warmup, on_progress=on_progress)

    async def build_tar(
        self,
        context: bytes,
        name: str,
        *,
        dockerfile: str = "Dockerfile",
        build_args: Mapping[str, str] | None = None,
        target: str | None = None,
        no_cache: bool = False,
        preboot: bool = False,
        warmup: Sequence[str] | None = None,
        on_progress: Progress | None = None,
    ) -> ImageInfo:
        """Build from a context already packed as a tar archive."""
        params: list[tuple[str, str]] = [("name", name), ("dockerfile", dockerfile)]
        params += [("build_arg", f"{k}={v}") for k, v in (build_args or {}).items()]
        params += [("warmup", w) for w in (warmup or [])]
        if target:
            params.append(("target", target))
        if no_cache:
            params.append(("no_cache", "true"))
        if preboot:
            params.append(("preboot", "true"))
        return await self._stream("/images/build", on_progress, params=params, content=context,
                                  headers={"Content-Type": "application/x-tar"})

    async def pull(
        self,
        image: str,
        *,
        username: str | None = None,
        password: str | None = None,
        preboot: bool = False,
        warmup: Sequence[str] | None = None,
        on_progress: Progress | None = None,
    ) -> ImageInfo:
        """Pull ``HOST[:PORT]/NAME[:TAG|@sha256:...]``; credentials are remembered per registry."""
        body: dict[str, Any] = {"image": image, "preboot": preboot}
        if username is not None or password is not None:
            body["username"], body["password"] = username, password
        if warmup:
            body["warmup"] = list(warmup)
        return await self._stream("/images/pull", on_progress, json_body=body)

    async def list(self) -> builtins.list[ImageInfo]:
        data = (await self._client._request("GET", "/images")).json()
        return [ImageInfo.from_json(item) for item in data.get("images", [])]

    async def get(self, name: str) -> ImageInfo:
        """Describe one image; :class:`ImageNotFoundError` if there is none."""
        response = await self._client._request("GET", f"/images/{name}", not_found=ImageNotFoundError)
        return ImageInfo.from_json(response.json())

    async def delete(self, name: str) -> None:
        """Remove an image (:class:`Conflict` while a sandbox uses it). Already gone is fine."""
        await self._client._request("DELETE", f"/images/{name}", ok_statuses=(404,))

    async def register(
        self, name: str, snapshot_id: str, *, preboot: bool = False, warmup: Sequence[str] | None = None
    ) -> ImageInfo:
        """Name a completed snapshot (spec §5); a memory snapshot makes a pre-booted image."""
        body: dict[str, Any] = {"name": name, "snapshot_id": snapshot_id, "preboot": preboot}
        if warmup:
            body["warmup"] = list(warmup)
        response = await self._client._request("POST", "/images/register", json=body, timeout=BUILD_TIMEOUT)
        return ImageInfo.from_json(response.json())

    async def preboot(self, name: str, *, warmup: Sequence[str] | None = None) -> ImageInfo:
        """Give an image a memory snapshot of a booted sandbox, after ``warmup`` ran."""
        body = {"warmup": list(warmup)} if warmup else {}
        response = await self._client._request("POST", f"/images/{name}/preboot", json=body,
                                               timeout=BUILD_TIMEOUT, not_found=ImageNotFoundError)
        return ImageInfo.from_json(response.json())

    async def prune(self) -> int:
        """Drop the server's build cache (the next build of anything runs every step);
        returns how many cached images went."""
        response = await self._client._request("POST", "/images/prune", timeout=BUILD_TIMEOUT)
        return int(response.json().get("pruned_cache_images", 0))

    async def set_warm_pool(self, name: str, size: int) -> ImageInfo:
        """Keep ``size`` running sandboxes of the image ready (0: none); creates that fit
        claim one instead of booting."""
        response = await self._client._request("PUT", f"/images/{name}/warm-pool", json={"size": size},
                                               timeout=BUILD_TIMEOUT, not_found=ImageNotFoundError)
        return ImageInfo.from_json(response.json())

    async def _stream(
        self,
        path: str,
        on_progress: Progress | None,
        *,
        params: Any = None,
        content: bytes | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> ImageInfo:
        """POST and read the job's JSON lines: progress, then the image or an error."""
        url = self._client.config.api_url + path
        result: dict[str, Any] | None = None
        with map_transport_errors(f"POST {url}"):
            async with self._client._http.stream(
                "POST", url, params=params, content=content, json=json_body, headers=headers,
                timeout=BUILD_TIMEOUT,
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise_for_status(response, not_found=ImageNotFoundError)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if "line" in event:
                        if on_progress is not None:
                            on_progress(event["line"])
                    elif "image" in event:
                        result = event["image"]
                    elif "error" in event:
                        raise error_from_response(int(event.get("status") or 500), line,
                                                  not_found=ImageNotFoundError)
        if result is None:
            raise error_from_response(502, "the image job ended without a result")
        return ImageInfo.from_json(result)
