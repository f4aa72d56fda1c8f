"""Pull an image from an OCI registry into the OCI layout with skopeo.

``skopeo copy docker://REF oci:LAYOUT:NAME`` checks every blob against the digest its
manifest names while copying, and skips blobs the layout already holds (by digest):
layers are stored once and shared by every image that has them. A reference pinned
with ``@sha256:`` is checked once more here, against the manifest that arrived.

Credentials given with a pull are stored with ``skopeo login`` (per registry, in
cellbox's own auth file) and used by later pulls and builds from that registry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from .. import _proc
from ..errors import CommandFailed, DigestMismatch, ImageNotFound, InvalidRequest
from ..storage.images import OciLayout, async_layout_lock
from . import refs
from .tools import Tools

PULL_TIMEOUT = 3600.0


class RegistryAuthFailed(InvalidRequest):
    """The registry refused the credentials (or asked for some and got none)."""

    status = 401
    code = "REGISTRY_UNAUTHORIZED"


class RegistryUnavailable(InvalidRequest):
    """The registry could not be reached or answered with an error."""

    status = 502
    code = "REGISTRY_UNAVAILABLE"


class Puller:
    def __init__(self, tools: Tools, store: OciLayout) -> None:
        self.tools = tools
        self.store = store

    def _tls(self, ref: refs.ImageRef) -> list[str]:
        return ["--tls-verify=false"] if ref.insecure else []

    async def login(self, registry_ref: refs.ImageRef, username: str, password: str) -> None:
        self.tools.ensure()
        assert registry_ref.registry
        try:
            await _proc.run(
                self.tools.skopeo("login", "--authfile", str(self.tools.auth_file), *self._tls(registry_ref),
                                  "--username", username, "--password-stdin", registry_ref.registry),
                input=password.encode(), timeout=60, env=self.tools.env(),
            )
        except CommandFailed as exc:
            raise _classify(exc, registry_ref) from None

    async def pull(self, ref: refs.ImageRef, on_line: Callable[[str], None]) -> str:
        """Copy ``ref`` into the layout under its canonical name; returns the manifest digest."""
        if not ref.is_remote:
            raise InvalidRequest(f"image: {ref.name!r} is not a registry reference (HOST[:PORT]/NAME[:TAG])")
        self.tools.ensure()
        self.store._init_layout()
        argv = self.tools.skopeo(
            "copy", "--authfile", str(self.tools.auth_file), *(["--src-tls-verify=false"] if ref.insecure else []),
            "--retry-times", "2", f"docker://{ref.remote}", f"oci:{self.store.layout}:{ref.name}",
        )
        try:
            async with async_layout_lock(self.store.layout):
                await _proc.stream(argv, on_line, timeout=PULL_TIMEOUT, env=self.tools.env())
                digest = self.store.refs()[ref.name]
                if ref.digest:
                    self._verify_pinned(ref, digest)
        except CommandFailed as exc:
            raise _classify(exc, ref) from None
        return digest

    def _verify_pinned(self, ref: refs.ImageRef, digest: str) -> None:
        """A pinned reference must give exactly the manifest it names. skopeo stores the
        manifest it fetched by that digest; recompute it from the bytes on disk."""
        data = self.store._blob_path(digest).read_bytes()
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest != ref.digest or actual != ref.digest:
            raise DigestMismatch(actual, ref.digest)


def _classify(exc: CommandFailed, ref: refs.ImageRef) -> Exception:
    text = exc.stderr.lower()
    tail = exc.stderr.strip().splitlines()[-1][-500:] if exc.stderr.strip() else str(exc)
    if any(s in text for s in ("unauthorized", "authentication required", "invalid username/password", " 401")):
        return RegistryAuthFailed(f"registry {ref.registry} refused access to {ref.remote}: {tail}")
    if "manifest unknown" in text or "not found" in text or "name unknown" in text:
        return ImageNotFound(ref.remote, in_registry=True)
    if "connection refused" in text or "no such host" in text or "i/o timeout" in text or "server gave http" in text:
        return RegistryUnavailable(f"registry {ref.registry} is not reachable: {tail}")
    return RegistryUnavailable(f"pulling {ref.remote} failed: {tail}")
