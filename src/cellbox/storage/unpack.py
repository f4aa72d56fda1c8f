"""Unpack an OCI image's layers into a read-only btrfs subvolume.

Two things a plain ``tar -x`` of each layer gets wrong or does slowly:

* **Whiteouts** (OCI image spec, "Representing Changes"): a layer deletes a file of a
  lower layer with an empty ``.wh.<name>`` entry and empties a directory with
  ``.wh..wh..opq``. They are applied *before* the layer is extracted (they only hide
  lower layers), and never extracted themselves. Hand-written because neither
  buildah nor skopeo unpacks to a plain directory, and umoci is not in Debian 12.
* **Shared lower layers**: an image built ``FROM cellbox/debian`` has the default
  image's layers first. If an unpacked image's layers are a prefix of the new one's,
  its subvolume is snapshotted (milliseconds) and only the remaining layers are
  applied, instead of extracting hundreds of MiB again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .. import _proc
from ..errors import InternalFailure
from . import btrfs

LAYER_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
})
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


async def unpack(layers: Sequence[Path], media_types: Sequence[str], dest: Path, *, base: Path | None = None) -> None:
    """Make ``dest`` (read-only) from ``base`` (a subvolume holding the first layers, or
    None) plus ``layers`` applied in order. Works in a temporary subvolume renamed into
    place at the end, so a crash never leaves a half-unpacked image that looks complete.
    """
    for media_type in media_types:
        if media_type not in LAYER_TYPES:
            raise InternalFailure(f"unsupported layer type {media_type}")
    tmp = dest.parent / f".tmp-{dest.name}"
    await btrfs.delete(tmp)
    if base is not None:
        await btrfs.snapshot(base, tmp)
    else:
        await btrfs.create(tmp)
    try:
        for layer in layers:
            await apply_layer(layer, tmp)
        await btrfs.set_readonly(tmp)
        os.replace(tmp, dest)
    except BaseException:
        await btrfs.delete(tmp)
        raise


async def apply_layer(layer: Path, root: Path) -> None:
    """Apply one layer tarball (any compression GNU tar detects) onto ``root``."""
    listing = await _proc.run(["tar", "-t", "-f", str(layer)], timeout=600)
    whiteouts = [n for n in listing.stdout.splitlines() if os.path.basename(n.rstrip("/")).startswith(WHITEOUT)]
    for name in whiteouts:
        _apply_whiteout(root, name)
    await _proc.run(
        ["tar", "-x", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--exclude=.wh.*",
         "-C", str(root), "-f", str(layer)],
        timeout=600,
    )


def _apply_whiteout(root: Path, name: str) -> None:
    rel = os.path.normpath(name.lstrip("./").lstrip("/"))
    if rel.startswith(".."):
        raise InternalFailure(f"layer has a whiteout outside the root: {name}")
    parent, base = os.path.split(rel)
    # Resolve the parent as the kernel would, and refuse one that leaves the image
    # (an absolute symlink of a lower layer must not point a whiteout at the host).
    directory = Path(os.path.realpath(root / parent))
    if directory != root.resolve() and root.resolve() not in directory.parents:
        raise InternalFailure(f"layer whiteout {name} resolves outside the image")
    if base == OPAQUE:
        if directory.is_dir() and not directory.is_symlink():
            for child in directory.iterdir():
                _remove(child)
        return
    _remove(directory / base[len(WHITEOUT):])


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
