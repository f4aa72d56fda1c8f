"""buildah and skopeo, run with cellbox's own storage, policy and credentials.

Why these tools: both are Debian packages maintained with podman (containers/image and
containers/storage underneath), they speak every registry and Dockerfile feature we
need, and they write OCI layouts directly. Hand-written registry or Dockerfile code
would be thousands of lines of someone else's protocol.

Everything they keep is under our data directory, never the host's defaults:

* buildah's image and layer store (its build cache): ``data_dir/buildah``, runtime state
  under ``run_dir/buildah``, storage driver ``overlay``;
* ``registries.conf`` with no search registries, so a short name never goes to the
  network by surprise (``FROM cellbox/debian`` means our local image);
* ``policy.json`` accepting any image: trust is by digest (skopeo checks every blob
  against its manifest; a pinned ``@sha256:`` reference is checked against the
  manifest it gets), not by signatures, which a self-hosted registry rarely has;
* registry credentials in ``data_dir/registry-auth.json`` (mode 600), written by
  ``skopeo login`` when a pull is given a username and password, then used by later
  pulls and by builds whose ``FROM`` names that registry.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Settings

STORAGE_DRIVER = "overlay"
REGISTRIES_CONF = 'unqualified-search-registries = []\nshort-name-mode = "permissive"\n'
POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'


class Tools:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conf_dir = settings.data_dir / "containers"
        self.buildah_root = settings.data_dir / "buildah"
        self.buildah_runroot = settings.run_dir / "buildah"
        self.auth_file = settings.data_dir / "registry-auth.json"

    def ensure(self) -> None:
        """Write our configuration files (idempotent, cheap)."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (("registries.conf", REGISTRIES_CONF), ("policy.json", POLICY)):
            path = self.conf_dir / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        if not self.auth_file.exists():
            fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b'{"auths": {}}\n')
            os.close(fd)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_REGISTRIES_CONF": str(self.conf_dir / "registries.conf"),
            "REGISTRY_AUTH_FILE": str(self.auth_file),
            "BUILDAH_ISOLATION": "oci",
            "TMPDIR": str(self.tmp_dir()),
        }

    def tmp_dir(self) -> Path:
        path = self.settings.data_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def buildah(self, *args: str) -> list[str]:
        return [
            "buildah", "--root", str(self.buildah_root), "--runroot", str(self.buildah_runroot),
            "--storage-driver", STORAGE_DRIVER, "--registries-conf", str(self.conf_dir / "registries.conf"),
            *args,
        ]

    def skopeo(self, *args: str) -> list[str]:
        return ["skopeo", "--policy", str(self.conf_dir / "policy.json"), *args]
