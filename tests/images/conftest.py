"""Fixtures for the image tests: a loopback registry, and a tracker of the images,
snapshots and sandboxes a test makes, removed at teardown even when the test fails.

After each test, buildah's store must hold no working container (a failed build that
left one behind leaks disk and names)."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellbox.errors import NotFound
from cellbox.manager.sandboxes import SandboxManager

from ..conftest import LoopThread
from . import registry as registry_mod


class Images:
    """Names of images (and snapshots) made by one test; all removed afterwards."""

    def __init__(self, manager: SandboxManager, lt: LoopThread) -> None:
        self.manager, self.lt = manager, lt
        self.names: list[str] = []
        self.snapshots: list[str] = []

    @property
    def im(self):  # noqa: ANN201 - the ImageManager
        return self.manager.image_manager

    def track(self, name: str) -> str:
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        errors = []
        for name in reversed(self.names):
            try:
                self.lt.run(self.im.remove(name), timeout=300)
            except NotFound:
                pass
            except Exception as exc:  # noqa: BLE001 - reach every image
                errors.append(f"{name}: {exc}")
        for sid in self.snapshots:
            try:
                self.lt.run(self.manager.memory.delete_snapshot(sid))
            except NotFound:
                pass
        assert not errors, f"could not remove images: {errors}"
        assert not image_leftovers(self.manager), "images left parts behind"


def image_leftovers(manager: SandboxManager) -> dict[str, list[str]]:
    """Parts of images no named image owns: unpacked subvolumes of no named manifest,
    unnamed index entries, image-owned snapshots no catalog row points to."""
    from cellbox.manager.images import IMAGES_NAMESPACE

    store = manager.images
    live = {d.split(":", 1)[1] for d in store.refs().values()}
    out = {
        "subvolumes": [p.name for p in store.unpacked.iterdir() if not p.name.startswith(".") and p.name not in live],
        "unnamed": [m["digest"] for m in store._read_index()["manifests"] if not m.get("annotations")],
    }
    owned = set()
    for rec in manager.image_manager.catalog.list():
        owned |= {rec.snapshot_id, rec.memory_snapshot_id}
    out["snapshots"] = [s.id for s in manager.memory.snapshots.list(IMAGES_NAMESPACE) if s.id not in owned]
    return {k: v for k, v in out.items() if v}


@pytest.fixture
def images(manager: SandboxManager, loop_thread: LoopThread) -> Iterator[Images]:
    im = Images(manager, loop_thread)
    try:
        yield im
    finally:
        im.cleanup()
        assert buildah_containers(manager) == [], "a build left buildah working containers behind"


def buildah_containers(manager: SandboxManager) -> list[str]:
    tools = manager.image_manager.tools
    if not tools.buildah_root.exists():
        return []
    out = subprocess.run(tools.buildah("containers", "-q"), capture_output=True, text=True, env=tools.env())
    return out.stdout.split()


@pytest.fixture(scope="session", autouse=True)
def prune_build_cache_at_end(manager: SandboxManager, loop_thread: LoopThread) -> Iterator[None]:
    """Builds keep buildah's cache (that is what makes a rebuild fast); the test session
    drops what its builds cached, so nothing of it stays on the host."""
    yield
    loop_thread.run(manager.image_manager.prune(), timeout=600)
    tools = manager.image_manager.tools
    dangling = subprocess.run(tools.buildah("images", "--filter", "dangling=true", "-q"), capture_output=True,
                              text=True, env=tools.env()).stdout.split()
    assert not dangling, f"build cache left after prune: {dangling}"


@pytest.fixture(scope="session")
def registry(settings) -> Iterator[registry_mod.Registry]:  # noqa: ANN001
    if not registry_mod.available():
        pytest.skip("docker-registry or htpasswd missing (run scripts/setup.sh --test)")
    reg = registry_mod.start()
    try:
        yield reg
    finally:
        from cellbox.images.tools import Tools

        try:
            registry_mod.forget_credentials(reg, Tools(settings).auth_file)
        finally:
            registry_mod.stop(reg)


def write_context(root: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(textwrap.dedent(dockerfile).lstrip())
    for name, text in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def context_tar(files: dict[str, str]) -> bytes:
    """A build context as an uncompressed tar of text files (what ``POST /images/build`` takes)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
