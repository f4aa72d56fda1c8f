"""Image names as users type them (issue 14 item 7).

* **Tensorlake's built-in names** (``tensorlake/ubuntu-minimal`` and friends, spec §5)
  map to cellbox's built-in image (the server's default); the ones cellbox has no
  counterpart for are a 400 naming what exists.
* **Docker Hub short names**: ``python:3.12-slim`` means
  ``docker.io/library/python:3.12-slim`` and ``bitnami/redis`` means
  ``docker.io/bitnami/redis:latest``, as Docker and Podman read them — when no local
  image has that name. They (and explicit ``docker.io/...`` references) are pulled
  from ``CELLBOX_REGISTRY_MIRROR`` (``HOST[:PORT][/PREFIX]``) when it is set, and
  stored under their ``docker.io`` name, so the catalog says what the image is, not
  where this server happened to fetch it. Without a mirror a short name is a 404
  that names docker.io and the setting: this server never reaches out to Docker Hub
  on a guess.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import InvalidRequest, NotFound
from . import refs

HUB = "docker.io"
HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# Tensorlake's base images (spec §5) -> True: served by the built-in image; False: none here.
TENSORLAKE_BASES = {"tensorlake/ubuntu-minimal": True, "tensorlake/debian-minimal": True,
                    "tensorlake/ubuntu-systemd": False, "tensorlake/ubuntu-vnc": False}


def builtin_alias(image: str | None) -> tuple[bool, str | None]:
    """(is a Tensorlake base name, the image to use instead: None = the default)."""
    if image is None:
        return False, None
    base = image.split(":", 1)[0]
    if base not in TENSORLAKE_BASES:
        return False, image
    if not TENSORLAKE_BASES[base]:
        served = ", ".join(k for k, v in TENSORLAKE_BASES.items() if v)
        raise InvalidRequest(f"image: {image!r} has no counterpart on cellbox; built-in names served here: "
                             f"{served} (both: the server's default image)", code="IMAGE_NOT_FOUND")
    return True, None


def mirror() -> str | None:
    value = os.environ.get("CELLBOX_REGISTRY_MIRROR", "").strip().rstrip("/")
    return value or None


@dataclass(frozen=True)
class MirroredRef(refs.ImageRef):
    """A Docker Hub image (``registry`` docker.io, its catalog name) fetched from a mirror."""

    mirror: str = ""

    @property
    def remote(self) -> str:
        pin = f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}"
        return f"{self.mirror}/{self.repository}{pin}"

    @property
    def insecure(self) -> bool:
        host = self.mirror.split("/", 1)[0]
        return refs.ImageRef(host, self.repository, self.tag, self.digest).insecure


def hub_ref(ref: refs.ImageRef) -> refs.ImageRef:
    """A short name as Docker Hub's (``library/`` for one component)."""
    repo = ref.repository if "/" in ref.repository else f"library/{ref.repository}"
    return refs.ImageRef(HUB, repo, ref.tag, ref.digest)


def via_mirror(ref: refs.ImageRef) -> refs.ImageRef:
    """A Docker Hub reference fetched through the mirror, if one is set."""
    m = mirror()
    if m is None or ref.registry not in HUB_ALIASES:
        return ref
    return MirroredRef(HUB, ref.repository, ref.tag, ref.digest, mirror=m)


def expand_short(image: str, ref: refs.ImageRef) -> refs.ImageRef:
    """What a local name that is not here means: its Docker Hub reference, through the
    mirror; 404 naming docker.io and the setting when there is no mirror."""
    hub = hub_ref(ref)
    if mirror() is None:
        raise NotFound(f"image {image!r} not found here; as a Docker Hub name it is {hub.name}, and this server "
                       "has no registry mirror to pull it from (set CELLBOX_REGISTRY_MIRROR=HOST[:PORT])",
                       code="IMAGE_NOT_FOUND")
    return via_mirror(hub)
