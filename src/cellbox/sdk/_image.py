"""The Python image builder, shaped like Tensorlake's ``tensorlake.image.Image`` (spec §5)::

    from cellbox import Image

    info = (Image("team/py", base_image="cellbox/debian")
            .run("pip install --break-system-packages requests")
            .env("APP_ENV", "prod")
            .copy("app/", "/srv/app")
            .workdir("/srv/app")
            .build())

The operations become a Dockerfile (as Tensorlake's ``_dockerfile.py`` does), and the
files named by ``copy``/``add`` are sent with it as the build context, so the server
builds it exactly like ``cellbox image build``. No I/O here but reading those files.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest

if TYPE_CHECKING:
    from ._models import ImageInfo
    from ._sync import SandboxClient

DEFAULT_BASE = "cellbox/debian"


@dataclass
class Image:
    """A recipe for an image: a base plus ``run``/``env``/``copy``/``add``/``workdir``/``user``
    steps, in order. Each method returns the image itself, so calls chain."""

    name: str
    tag: str = "latest"
    base_image: str = DEFAULT_BASE
    _ops: list[tuple[str, Any]] = field(default_factory=list, repr=False)

    def run(self, commands: str | Sequence[str]) -> Image:
        """A ``RUN`` step per command (a list runs them as separate steps)."""
        for cmd in [commands] if isinstance(commands, str) else list(commands):
            self._ops.append(("RUN", cmd))
        return self

    def env(self, key: str, value: str) -> Image:
        if not key or "=" in key or any(c.isspace() for c in key):
            raise InvalidRequest(f"env: {key!r} is not a variable name")
        self._ops.append(("ENV", (key, value)))
        return self

    def copy(self, src: str | os.PathLike[str], dest: str) -> Image:
        """Copy a local file or directory into the image at ``dest``."""
        self._ops.append(("COPY", (Path(src), dest)))
        return self

    def add(self, src: str | os.PathLike[str], dest: str) -> Image:
        """Like ``copy``, with Docker's ``ADD`` semantics (local tar archives are unpacked)."""
        self._ops.append(("ADD", (Path(src), dest)))
        return self

    def workdir(self, directory: str) -> Image:
        self._ops.append(("WORKDIR", directory))
        return self

    def user(self, user: str) -> Image:
        self._ops.append(("USER", user))
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    def dockerfile(self) -> str:
        """The Dockerfile these steps make (``COPY``/``ADD`` sources renamed into the context)."""
        lines = [f"FROM {self.base_image}"]
        for i, (op, arg) in enumerate(self._ops):
            if op == "RUN":
                lines.append(f"RUN {arg}")
            elif op == "ENV":
                lines.append(f"ENV {arg[0]}={json.dumps(arg[1])}")
            elif op in ("COPY", "ADD"):
                lines.append(f"{op} {json.dumps([_context_name(i, arg[0]), arg[1]])}")
            else:
                lines.append(f"{op} {arg}")
        return "\n".join(lines) + "\n"

    def context_tar(self) -> bytes:
        """The build context: the Dockerfile and every ``copy``/``add`` source."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            df = self.dockerfile().encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(df)
            tar.addfile(info, io.BytesIO(df))
            for i, (op, arg) in enumerate(self._ops):
                if op in ("COPY", "ADD"):
                    src = arg[0]
                    if not src.exists():
                        raise InvalidRequest(f"{op.lower()}: {src} does not exist")
                    tar.add(src, arcname=_context_name(i, src))
        return buf.getvalue()

    def build(
        self,
        client: SandboxClient | None = None,
        *,
        build_args: Mapping[str, str] | None = None,
        preboot: bool = False,
        warmup: Sequence[str] | None = None,
        on_progress: Any = None,
    ) -> ImageInfo:
        """Build on the server (``client``, default: a ``SandboxClient()``) and return the image."""
        from ._sync import SandboxClient

        own = client is None
        c = client or SandboxClient()
        try:
            return c.images.build_tar(self.context_tar(), self.ref, build_args=build_args, preboot=preboot,
                                      warmup=warmup, on_progress=on_progress)
        finally:
            if own:
                c.close()


def _context_name(index: int, src: Path) -> str:
    return f"_ctx{index}_{src.name or 'root'}"


def context_tar(directory: str | os.PathLike[str]) -> bytes:
    """A directory as a tar archive (the server applies its ``.dockerignore``)."""
    root = Path(directory)
    if not root.is_dir():
        raise InvalidRequest(f"context: {root} is not a directory")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name)
    return buf.getvalue()


def dockerfile_into_context(
    data: bytes, context: Path, dockerfile: str | os.PathLike[str] | None
) -> tuple[bytes, str]:
    """Make sure the Dockerfile travels with the context: a path inside the context is
    passed as is, one outside it is added to the archive under a reserved name."""
    if dockerfile is None:
        return data, "Dockerfile"
    path = Path(dockerfile)
    try:
        return data, str(path.resolve().relative_to(context.resolve()))
    except ValueError:
        pass
    if not path.is_file():
        raise InvalidRequest(f"dockerfile: {path} not found")
    # Rewrite the archive with one more member (the contexts sent here fit in memory).
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        content = path.read_bytes()
        info = tarfile.TarInfo(".cellbox.Dockerfile")
        info.size = len(content)
        dst.addfile(info, io.BytesIO(content))
    return out.getvalue(), ".cellbox.Dockerfile"
