"""Image references: a local name (``cellbox/debian``, ``myapp:v2``) or a registry
reference (``HOST[:PORT]/NAME[:TAG]`` or ``...@sha256:HEX``).

Docker's rule decides which is which: the first path component is a registry host if
it contains a ``.`` or a ``:`` or is ``localhost``. Names are checked here, before any
side effect, so a bad name is a 400 naming the problem and never reaches buildah or
skopeo (whose own errors are less clear).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from ..errors import InvalidRequest

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$")
MAX_LEN = 255


@dataclass(frozen=True)
class ImageRef:
    registry: str | None  # "127.0.0.1:5000"; None for a local name
    repository: str  # "team/app"
    tag: str | None  # "v1" (None when pinned by digest only)
    digest: str | None  # "sha256:..." when pinned

    @property
    def name(self) -> str:
        """The canonical name: what the catalog and the OCI index store."""
        base = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.digest and not self.tag:
            return f"{base}@{self.digest}"
        return f"{base}:{self.tag or 'latest'}"

    @property
    def remote(self) -> str:
        """The reference as skopeo's ``docker://`` transport wants it."""
        base = f"{self.registry}/{self.repository}"
        if self.digest:
            return f"{base}@{self.digest}"
        return f"{base}:{self.tag or 'latest'}"

    @property
    def is_remote(self) -> bool:
        return self.registry is not None

    @property
    def insecure(self) -> bool:
        """Plain HTTP is allowed only to loopback registries and to those listed in
        ``CELLBOX_INSECURE_REGISTRIES`` (comma-separated HOST[:PORT])."""
        if self.registry is None:
            return False
        host = self.registry.rsplit(":", 1)[0] if not self.registry.endswith("]") else self.registry
        host = host.strip("[]")
        listed = {h.strip() for h in os.environ.get("CELLBOX_INSECURE_REGISTRIES", "").split(",") if h.strip()}
        if self.registry in listed or host in listed or host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def parse(ref: str, *, field: str = "image") -> ImageRef:
    """Parse and validate; raises ``InvalidRequest`` naming the problem."""
    if not ref or len(ref) > MAX_LEN:
        raise InvalidRequest(f"{field}: an image reference must be 1-{MAX_LEN} characters")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidRequest(f"{field}: {digest!r} is not a sha256 digest (sha256:<64 hex>)")
    registry = None
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.match(first):
            raise InvalidRequest(f"{field}: {first!r} is not a registry host[:port]")
        registry, rest = first, remainder
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.match(tag):
            raise InvalidRequest(f"{field}: {tag!r} is not a valid tag")
    if not _NAME.match(rest):
        raise InvalidRequest(
            f"{field}: {rest!r} is not a valid image name (lowercase letters, digits, "
            "and . _ - between them; / between components)"
        )
    return ImageRef(registry, rest, tag, digest)


def canonical(ref: str, *, field: str = "image") -> str:
    return parse(ref, field=field).name
