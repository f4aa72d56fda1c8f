"""Named images: an OCI image layout on disk, unpacked into read-only btrfs subvolumes.

The OCI layout (``data_dir/oci``: ``blobs/sha256/*``, ``index.json``) is the source of
truth: blobs are stored by content and shared, names are ``org.opencontainers.image.
ref.name`` annotations in the index, and any OCI tool (skopeo, umoci, buildah) can
read or extend it; the images issue builds on that. A sandbox never starts from the
layout directly: each image is unpacked once into ``pool/images/<manifest digest>``,
a read-only subvolume that sandboxes snapshot in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ImageNotFound, InternalFailure, NotFound
from . import btrfs, unpack

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a sandbox uses."""

    env: list[str] = field(default_factory=lambda: [f"PATH={DEFAULT_PATH}"])
    cmd: list[str] = field(default_factory=lambda: ["/bin/bash"])
    working_dir: str = "/"
    user: str = ""


@dataclass(frozen=True)
class Image:
    name: str
    digest: str  # manifest digest, "sha256:<hex>"
    rootfs: Path  # the unpacked, read-only subvolume
    config: ImageConfig
    size_bytes: int


def normalize(name: str) -> str:
    """``cellbox/debian`` and ``cellbox/debian:latest`` name the same image."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last or "@" in last else f"{name}:latest"


class OciLayout:
    """The OCI image layout (blobs, index, names) and the images' unpacked subvolumes.

    Not a "store": in the manager that word means the sandbox records (``manager/store.py``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.layout = settings.oci_dir
        self.unpacked = settings.pool / "images"

    # -- the OCI layout -------------------------------------------------------------

    def _blob_path(self, digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return self.layout / "blobs" / algo / hexd

    def _init_layout(self) -> None:
        (self.layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = self.layout / "oci-layout"
        if not marker.exists():
            marker.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        if not (self.layout / "index.json").exists():
            self._write_index({"schemaVersion": 2, "manifests": []})

    def _read_index(self) -> dict[str, Any]:
        try:
            index: dict[str, Any] = json.loads((self.layout / "index.json").read_text())
            return index
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}

    def _write_index(self, index: dict[str, Any]) -> None:
        _atomic_write(self.layout / "index.json", json.dumps(index, indent=1).encode())

    def _put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self._blob_path(digest)
        if not path.exists():
            _atomic_write(path, data)
        return digest, len(data)

    def _put_file(self, src: Path) -> tuple[str, int]:
        """Move ``src`` into the blob store under its digest (content-addressed)."""
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        size = src.stat().st_size
        dest = self._blob_path(digest)
        if dest.exists():
            src.unlink()
        else:
            os.replace(src, dest)
        return digest, size

    def add_rootfs_tar(self, name: str, tar: Path, config: ImageConfig) -> str:
        """Add a single-layer image from a root filesystem tarball; returns its digest.

        The tarball is moved into the blob store (it is consumed).
        """
        self._init_layout()
        layer_digest, layer_size = self._put_file(tar)
        cfg = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": config.env,
                "Cmd": config.cmd,
                "WorkingDir": config.working_dir,
                **({"User": config.user} if config.user else {}),
            },
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            # One history entry per layer: buildah refuses a base image whose history
            # does not account for its layers ("history lists 0 non-empty layers").
            "history": [{"created_by": "cellbox: root filesystem tarball"}],
        }
        cfg_digest, cfg_size = self._put_bytes(json.dumps(cfg, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": cfg_digest, "size": cfg_size},
            "layers": [{"mediaType": LAYER_TAR, "digest": layer_digest, "size": layer_size}],
        }
        m_digest, m_size = self._put_bytes(json.dumps(manifest, sort_keys=True).encode())
        with layout_lock(self.layout):
            self._set_ref(normalize(name), m_digest, m_size)
        return m_digest

    def _set_ref(self, ref: str, digest: str, size: int) -> None:
        """Point ``ref`` at a manifest in the index (caller holds the layout lock)."""
        index = self._read_index()
        index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != ref]
        index["manifests"].append(
            {"mediaType": MANIFEST_TYPE, "digest": digest, "size": size, "annotations": {REF_NAME: ref}}
        )
        self._write_index(index)

    def refs(self) -> dict[str, str]:
        """Every named image: ref -> manifest digest."""
        return {m["annotations"][REF_NAME]: m["digest"] for m in self._read_index()["manifests"]
                if REF_NAME in m.get("annotations", {})}

    def manifest(self, digest: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self._blob_path(digest).read_text())
        return doc

    def image_config(self, manifest: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self._blob_path(manifest["config"]["digest"]).read_text())
        return doc

    async def remove(self, name: str) -> None:
        """Drop a name, then whatever no name uses any more (:meth:`collect`)."""
        ref = normalize(name)
        async with async_layout_lock(self.layout):
            index = self._read_index()
            gone = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) == ref]
            if not gone:
                raise ImageNotFound(name)
            index["manifests"] = [m for m in index["manifests"] if m not in gone]
            self._write_index(index)
        await self.collect()

    async def collect(self) -> None:
        """Delete blobs and unpacked subvolumes that no named image uses.

        Blobs are shared between images (same digest, one file), so they are collected
        by mark and sweep over every manifest the index still names, under the layout
        lock that skopeo and buildah writes also take. A sandbox never depends on an
        unpacked image: its root filesystem is a snapshot, independent once made.
        """
        async with async_layout_lock(self.layout):
            # containers/image keeps a manifest whose name moved to a newer one in the
            # index, unnamed: nothing can reach it, so it goes (and its blobs with it).
            index = self._read_index()
            named = [m for m in index["manifests"] if REF_NAME in m.get("annotations", {})]
            if len(named) != len(index["manifests"]):
                index["manifests"] = named
                self._write_index(index)
            live: set[str] = set()
            for m in named:
                live.add(m["digest"])
                try:
                    man = self.manifest(m["digest"])
                except FileNotFoundError:
                    continue
                live.add(man["config"]["digest"])
                live.update(layer["digest"] for layer in man.get("layers", []))
            blobs = self.layout / "blobs" / "sha256"
            for blob in blobs.iterdir() if blobs.exists() else []:
                if f"sha256:{blob.name}" not in live and not blob.name.startswith(".tmp-"):
                    blob.unlink(missing_ok=True)
            async with async_layout_lock(self.unpacked, name=".unpack.lock"):
                for sub in self.unpacked.iterdir() if self.unpacked.exists() else []:
                    if not sub.name.startswith(".") and f"sha256:{sub.name}" not in live:
                        await btrfs.delete(sub)

    def names(self) -> list[str]:
        return sorted(m["annotations"][REF_NAME] for m in self._read_index()["manifests"] if "annotations" in m)

    def _manifest_digest(self, name: str) -> str:
        ref = normalize(name)
        for m in self._read_index()["manifests"]:
            if m.get("annotations", {}).get(REF_NAME) == ref:
                return str(m["digest"])
        raise ImageNotFound(name)

    def exists(self, name: str) -> bool:
        try:
            self._manifest_digest(name)
            return True
        except NotFound:
            return False

    # -- unpacked root filesystems --------------------------------------------------

    async def resolve(self, name: str) -> Image:
        """Find a named image, unpacking it into the pool the first time it is used."""
        digest = self._manifest_digest(name)
        manifest = json.loads(self._blob_path(digest).read_text())
        cfg = json.loads(self._blob_path(manifest["config"]["digest"]).read_text()).get("config", {})
        rootfs = self.unpacked / digest.split(":", 1)[1]
        if not btrfs.is_subvolume(rootfs):
            async with async_layout_lock(self.unpacked, name=".unpack.lock"):
                if not btrfs.is_subvolume(rootfs):
                    await self._unpack(manifest, rootfs)
        return Image(
            name=normalize(name),
            digest=digest,
            rootfs=rootfs,
            config=ImageConfig(
                env=cfg.get("Env") or [f"PATH={DEFAULT_PATH}"],
                cmd=cfg.get("Cmd") or ["/bin/sh"],
                working_dir=cfg.get("WorkingDir") or "/",
                user=cfg.get("User") or "",
            ),
            size_bytes=sum(layer["size"] for layer in manifest["layers"]),
        )

    async def _unpack(self, manifest: dict[str, Any], rootfs: Path) -> None:
        """Unpack into ``rootfs``, starting from the unpacked image that shares the most
        leading layers with this one (see ``unpack.py``). Layers are compared by their
        uncompressed digests (the config's ``diff_ids``), so an image pulled from a
        registry (gzip layers) still shares the default image's unpacked layers."""
        layers = self._diff_ids(manifest)
        base, done = None, 0
        for digest in set(self.refs().values()):
            other = self.unpacked / digest.split(":", 1)[1]
            if other == rootfs or not btrfs.is_subvolume(other):
                continue
            try:
                theirs = self._diff_ids(self.manifest(digest))
            except (FileNotFoundError, KeyError, ValueError):
                continue
            if done < len(theirs) <= len(layers) and layers[: len(theirs)] == theirs:
                base, done = other, len(theirs)
        rest = manifest["layers"][done:]
        await unpack.unpack([self._blob_path(layer["digest"]) for layer in rest],
                            [layer["mediaType"] for layer in rest], rootfs, base=base)

    def _diff_ids(self, manifest: dict[str, Any]) -> list[str]:
        """Uncompressed layer digests; the blob digests if the config lacks them."""
        ids = self.image_config(manifest).get("rootfs", {}).get("diff_ids") or []
        if len(ids) != len(manifest["layers"]):
            return [layer["digest"] for layer in manifest["layers"]]
        return list(ids)



# The old name ("store" now means only the sandbox records, manager/store.py).
ImageStore = OciLayout

class _Flock:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def try_lock(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


@contextlib.contextmanager
def layout_lock(layout: Path, name: str = ".lock") -> Iterator[None]:
    """Exclusive lock on the OCI layout's index (all cellbox processes on this host)."""
    lock = _Flock(layout / name)
    fcntl.flock(lock.fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def async_layout_lock(layout: Path, name: str = ".lock") -> AsyncIterator[None]:
    """:func:`layout_lock` without blocking the event loop."""
    lock = _Flock(layout / name)
    try:
        while not lock.try_lock():
            await asyncio.sleep(0.02)
    except BaseException:
        os.close(lock.fd)
        raise
    try:
        yield
    finally:
        lock.release()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def which(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise InternalFailure(f"{tool} is not installed (run scripts/setup.sh)")
    return path
