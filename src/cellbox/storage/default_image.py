"""Build the default image, ``cellbox/debian``, from Debian's archive with mmdebstrap.

Built once at setup (about a minute), then cached in the OCI layout; ``FROM
cellbox/debian`` in Dockerfiles refers to it. The package set is what the brief asks
an agent to find in a sandbox: a shell and core tools, Python, Node.js, SQLite, git,
curl with CA certificates, iproute2.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import _proc
from ..config import Settings
from .images import ImageConfig, OciLayout

PACKAGES = [
    "bash", "coreutils", "procps", "python3", "nodejs", "sqlite3", "git", "curl",
    "ca-certificates", "iproute2", "less", "findutils", "grep", "sed", "tar", "gzip", "xz-utils",
]
SUITE = "bookworm"
# Files the runtime writes per sandbox (hostname, resolver) start empty in the image.
CUSTOMIZE = (
    'rm -f "$1/etc/resolv.conf" "$1/etc/hostname" && : > "$1/etc/machine-id"'
    ' && printf "127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n" > "$1/etc/hosts"'
)
SLIM = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
]


def host_mirror() -> str:
    """The Debian mirror this host already uses for bookworm (no host names baked in)."""
    try:
        out = subprocess.run(
            ["apt-get", "indextargets", "--format", "$(REPO_URI)", f"Codename: {SUITE}", "Created-By: Packages"],
            capture_output=True, text=True, check=False,
        ).stdout.split()
    except FileNotFoundError:
        out = []
    return out[0].rstrip("/") if out else "http://deb.debian.org/debian"


def build(settings: Settings, store: OciLayout, name: str | None = None) -> str:
    """Build the image and add it to the store; returns the manifest digest."""
    name = name or settings.default_image
    tmp_dir = settings.data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tar = tmp_dir / "default-image.tar"
    tar.unlink(missing_ok=True)
    argv = [
        "mmdebstrap", "--variant=minbase", "--quiet",
        f"--include={','.join(PACKAGES)}",
        *[f"--dpkgopt={rule}" for rule in SLIM],
        f"--customize-hook={CUSTOMIZE}",
        SUITE, str(tar), host_mirror(),
    ]
    try:
        _proc.run_sync(argv, timeout=1800)
        return store.add_rootfs_tar(
            name, Path(tar), ImageConfig(cmd=["/bin/bash"], working_dir="/", env=[
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
            ]),
        )
    finally:
        tar.unlink(missing_ok=True)
