"""Build an image from a Dockerfile with buildah, into the OCI layout.

Steps: check the request (name, Dockerfile inside the context) → make sure every base
image named by a ``FROM`` is in buildah's store (local images are loaded from the OCI
layout, registry ones are pulled through ``pull.py`` first, so credentials, loopback
rules and digest checks are the same as for ``cellbox image pull``) → ``buildah build
--layers`` (the layer cache: an unchanged rebuild reuses every step) → ``buildah push``
into the OCI layout under the image's name, uncompressed, so a layer already stored
(the base image's) is recognised by digest and not written again.

The Dockerfile passes ``dockerfile_check`` first (no RUN mount but tmpfs, no ADD from
a URL, no parser directive, ...; base images' ONBUILD triggers too): buildah 1.28 has
CVE-2024-1753 and resolves more than one kind of path on the host.

RUN steps run under runc (``--isolation oci``) with buildah's default capabilities and
seccomp profile, in a network namespace the manager made for the build on the sandbox
bridge: the same egress, the same isolation from the host's services and the other
sandboxes, the same resolver (``--dns`` the gateway) as a sandbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import _proc
from ..errors import CommandFailed, DockerfileNotFound, ImageNotFound, InvalidRequest
from ..storage.images import REF_NAME, OciLayout, async_layout_lock
from . import dockerfile_check, refs
from .tools import Tools

BUILD_TIMEOUT = 3600.0
_ARG = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class BuildFailed(InvalidRequest):
    """The Dockerfile did not build (a step failed): the user's input, so a 4xx."""

    status = 422
    code = "BUILD_FAILED"


@dataclass(frozen=True)
class BuildRequest:
    name: str  # canonical local name
    context: Path  # a directory on the host
    dockerfile: str = "Dockerfile"  # relative to the context
    build_args: Mapping[str, str] | None = None
    target: str | None = None
    no_cache: bool = False


def validate(req: BuildRequest) -> Path:
    """Check everything before the first side effect; return the Dockerfile's path."""
    ref = refs.parse(req.name, field="name")
    if ref.is_remote:
        raise InvalidRequest("name: a built image gets a local name (push to registries is not supported)")
    dockerfile_check.check_name(req.dockerfile)
    df = (req.context / req.dockerfile).resolve()
    if req.context.resolve() not in df.parents:
        raise InvalidRequest(f"dockerfile: {req.dockerfile!r} is outside the build context")
    if not df.is_file():
        raise DockerfileNotFound(req.dockerfile)
    # Before anything runs: what buildah 1.28 cannot run safely is refused (a 400
    # naming the line), see dockerfile_check.py.
    dockerfile_check.check(df.read_bytes().decode("utf-8", errors="replace"), where=req.dockerfile)
    for key in (req.build_args or {}):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise InvalidRequest(f"build_args: {key!r} is not a valid argument name")
    if req.target is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", req.target):
        raise InvalidRequest(f"target: {req.target!r} is not a stage name")
    return df


def base_images(dockerfile: str, build_args: Mapping[str, str] | None = None) -> list[str]:
    """The images a Dockerfile's ``FROM`` lines name (not stages, not ``scratch``), with
    ``ARG``s declared before the first ``FROM`` (or given as build args) substituted."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    out: list[str] = []
    seen_from = False
    # Lines read exactly as dockerfile_check (and buildah) read them, so the bases
    # pulled and seeded here are the ones buildah will use.
    for _, raw in dockerfile_check.logical_lines(dockerfile):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not seen_from:
            key, _, default = rest.strip().partition("=")
            args[key.strip()] = (build_args or {}).get(key.strip(), default.strip().strip('"'))
        elif word == "FROM":
            seen_from = True
            parts = [p for p in rest.split() if not p.startswith("--")]
            if not parts:
                raise InvalidRequest("dockerfile: a FROM line names no image")
            image = _ARG.sub(lambda m: args.get(m.group(1) or m.group(3), m.group(2) or ""), parts[0])
            if len(parts) >= 3 and parts[1].lower() == "as":
                stages.add(parts[2].lower())
            if image.lower() != "scratch" and image.lower() not in stages and image not in out:
                out.append(image)
    if not seen_from:
        raise InvalidRequest("dockerfile: no FROM line")
    return out


class Builder:
    def __init__(self, tools: Tools, store: OciLayout) -> None:
        self.tools = tools
        self.store = store
        self._seeds_file = tools.settings.data_dir / "buildah-seeds.json"
        # Builds from the same base load it once (buildah locks its own store; this
        # only saves a second load and keeps the seeds file consistent).
        self._seed_lock = asyncio.Lock()

    async def build(
        self,
        req: BuildRequest,
        on_line: Callable[[str], None],
        ensure_local: Callable[[str], Awaitable[str]],
        *,
        netns_path: str | None,
        dns: str | None,
        previous: tuple[str, str] | None = None,
    ) -> tuple[str, str]:
        """Build and store ``req.name``; returns (buildah image ID, manifest digest).

        ``ensure_local(ref)`` makes a base image available in the OCI layout (pulling it
        if it is a registry reference) and returns its canonical name. ``previous`` is
        the (image ID, digest) of the last build of this name: when every step came
        from the cache the image ID is the same, and the export is skipped.
        """
        df = validate(req)
        self.tools.ensure()
        for base in base_images(df.read_text(errors="replace"), req.build_args):
            name = await ensure_local(base)
            self._check_triggers(name)
            async with self._seed_lock:
                await self._seed(name, on_line)
        tag = _buildah_tag(req.name)
        argv = self.tools.buildah(
            "build", "--layers", "--force-rm", "--runtime", "runc", "--isolation", "oci", "--pull-never",
            "--network", f"ns:{netns_path}" if netns_path else "none",
            "-f", str(df), "-t", tag,
        )
        iid_dir = tempfile.TemporaryDirectory(dir=self.tools.tmp_dir())
        iid_file = Path(iid_dir.name) / "iid"
        argv += ["--iidfile", str(iid_file)]
        if dns:
            argv += ["--dns", dns]
        if req.no_cache:
            argv.append("--no-cache")
        if req.target:
            argv += ["--target", req.target]
        for key, value in (req.build_args or {}).items():
            argv += ["--build-arg", f"{key}={value}"]
        argv.append(str(req.context))
        try:
            await _proc.stream(argv, on_line, timeout=BUILD_TIMEOUT, env=self.tools.env())
            image_id = iid_file.read_text().strip()
        except CommandFailed as exc:
            raise BuildFailed(f"the build failed: {exc.stderr.strip()[-1500:]}") from None
        finally:
            iid_dir.cleanup()
        if previous and previous[0] == image_id and self.store.refs().get(req.name) == previous[1]:
            on_line(f"unchanged: {req.name} is {previous[1]}")
            return image_id, previous[1]
        return image_id, await self._export(tag, req.name, on_line)

    def _check_triggers(self, name: str) -> None:
        """A base image's ONBUILD triggers run in this build: they pass the same check
        as the Dockerfile (buildah reads them from the config's Docker-format part)."""
        digest = self.store.refs().get(name)
        if digest is None:
            return  # _seed answers IMAGE_NOT_FOUND
        config = self.store.image_config(self.store.manifest(digest))
        dockerfile_check.check_triggers(dockerfile_check.triggers_of(config), name)

    async def _export(self, tag: str, name: str, on_line: Callable[[str], None]) -> str:
        """``buildah push`` into the OCI layout under the lock every writer of its index
        takes; returns the manifest digest."""
        self.store._init_layout()
        with tempfile.TemporaryDirectory(dir=self.tools.tmp_dir()) as tmp:
            digest_file = Path(tmp) / "digest"
            async with async_layout_lock(self.store.layout):
                await _proc.stream(
                    self.tools.buildah("push", "--disable-compression", "--digestfile", str(digest_file),
                                       tag, f"oci:{self.store.layout}:{name}"),
                    on_line, timeout=BUILD_TIMEOUT, env=self.tools.env(),
                )
            return digest_file.read_text().strip()

    async def prune(self) -> int:
        """Drop the build cache: buildah's untagged images (intermediate steps of every
        build, and images untagged by ``forget``). Returns how many went. The next build
        of anything runs every step again."""
        before = await self._dangling()
        await _proc.run(self.tools.buildah("rmi", "--prune", "--force"), check=False, timeout=600,
                        env=self.tools.env())
        return len(before) - len(await self._dangling())

    async def _dangling(self) -> list[str]:
        out = await _proc.run(self.tools.buildah("images", "--filter", "dangling=true", "-q"), check=False,
                              env=self.tools.env())
        return out.stdout.split()

    async def forget(self, name: str) -> None:
        """Untag a built image in buildah's store (its cached layers stay until pruned)."""
        await _proc.run(self.tools.buildah("rmi", _buildah_tag(name)), check=False, env=self.tools.env())

    # -- base images in buildah's store -------------------------------------------------

    async def _seed(self, name: str, on_line: Callable[[str], None]) -> None:
        """Load a local image into buildah's store under its name, once per digest.

        Loaded from a throw-away OCI layout whose blobs are hard links to ours (no
        copy), with one history entry per layer added to the config when it has none:
        buildah refuses a base whose history does not account for its layers.
        """
        digest = self.store.refs().get(name)
        if digest is None:
            raise ImageNotFound(name, base_of=True)
        seeds = self._read_seeds()
        tag = _buildah_tag(name)
        if seeds.get(name) == digest:
            probe = await _proc.run(self.tools.buildah("inspect", "--type", "image", tag), check=False,
                                    env=self.tools.env())
            if probe.returncode == 0:
                return
        on_line(f"loading base image {name} into the builder")
        # buildah names the loaded image after the layout's path: keep it a valid reference.
        tmp = self.tools.tmp_dir() / f"seed-{secrets.token_hex(6)}"
        tmp.mkdir()
        try:
            self._seed_layout(tmp, digest)
            out = await _proc.run(self.tools.buildah("pull", "--quiet", f"oci:{tmp}:seed"), timeout=1800,
                                  env=self.tools.env())
            image_id = out.stdout.strip().splitlines()[-1]
            await _proc.run(self.tools.buildah("tag", image_id, tag), env=self.tools.env())
            await _proc.run(self.tools.buildah("rmi", f"localhost{tmp}:latest"), check=False, env=self.tools.env())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        seeds[name] = digest
        self._seeds_file.write_text(json.dumps(seeds))

    def _seed_layout(self, tmp: Path, digest: str) -> None:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        manifest = self.store.manifest(digest)
        config = self.store.image_config(manifest)
        for layer in manifest["layers"]:
            os.link(self.store._blob_path(layer["digest"]), blobs / layer["digest"].split(":", 1)[1])
        history = config.get("history") or []
        if sum(1 for h in history if not h.get("empty_layer")) != len(manifest["layers"]):
            config["history"] = [{"created_by": "cellbox: imported layer"} for _ in manifest["layers"]]
        manifest = dict(manifest)
        manifest["config"] = dict(manifest["config"], **_write_blob(blobs, json.dumps(config).encode()))
        m = _write_blob(blobs, json.dumps(manifest).encode())
        (tmp / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (tmp / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json"),
             **m, "annotations": {REF_NAME: "seed"}}]}))

    def _read_seeds(self) -> dict[str, str]:
        try:
            return dict(json.loads(self._seeds_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}


def _write_blob(blobs: Path, data: bytes) -> dict[str, object]:
    import hashlib

    hexd = hashlib.sha256(data).hexdigest()
    (blobs / hexd).write_bytes(data)
    return {"digest": f"sha256:{hexd}", "size": len(data)}


def _buildah_tag(name: str) -> str:
    """buildah's name for an image: short names live under ``localhost/``."""
    return name if refs.parse(name).is_remote else f"localhost/{name}"
