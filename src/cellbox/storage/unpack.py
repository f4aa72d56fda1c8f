"""Unpack an OCI image's layers into a read-only btrfs subvolume.

Three things a plain ``tar -x`` of each layer gets wrong, dangerously or slowly:

* **Escapes.** A layer is untrusted input (any registry). If an earlier layer left an
  absolute symlink (``x -> /etc``), a later ``x/passwd`` extracted on the host would
  land in the host's /etc. So GNU tar runs *chrooted into the image* (as
  containers/storage's "chrootarchive" does): every path, symlinks included, resolves
  inside the image. The layer is decompressed outside and streamed in on stdin; tar
  and the few libraries it links are copied into a randomly named directory of the
  image for the duration (a layer cannot know the name) and removed afterwards.
* **Whiteouts** (OCI image spec, "Representing Changes"): a layer deletes a file of a
  lower layer with an empty ``.wh.<name>`` entry and empties a directory with
  ``.wh..wh..opq``. They are applied *before* the layer is extracted (they only hide
  lower layers), with paths resolved as inside the image, and never extracted.
* **Hostile content** (``layer_scan.py``): each layer's headers are read first: owners
  above 65535, ``..`` names and layers past the size or file-count cap are refused
  before anything is written, device nodes removed after; after the last layer ``check_tree``
  refuses a symlinked ``/proc``, ``/dev``, ``/sys``, ``/.cellbox`` or ``/etc``.
  Refusals are ``ImageRefused`` (422 ``IMAGE_REFUSED``).
* **Shared lower layers**: if an unpacked image's layers are a prefix of the new one's,
  its subvolume is snapshotted (milliseconds) and only the remaining layers applied.

Hand-written because neither buildah nor skopeo unpacks to a plain directory, and
umoci is not in Debian 12.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..errors import CommandFailed, InternalFailure
from . import btrfs, layer_scan

LAYER_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
})
WHITEOUT = layer_scan.WHITEOUT
# Where runc and cellbox mount over the image (runtime/bundle.py, agentfs.MOUNT_POINT),
# and where the host writes identity files (storage/rootfs.py).
MOUNT_POINTS = ("proc", "dev", "sys", ".cellbox", "etc")
IDENTITY_FILES = ("hostname", "hosts", "resolv.conf")
OPAQUE = ".wh..wh..opq"
TAR = "/usr/bin/tar"
LAYER_TIMEOUT = 1800.0
_MAX_LINKS = 40


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
        budget = layer_scan.Budget.default()  # one cap for all the layers of this unpack
        for layer in layers:
            await apply_layer(layer, tmp, budget)
        check_tree(tmp)
        await btrfs.set_readonly(tmp)
        os.replace(tmp, dest)
    except BaseException:
        await btrfs.delete(tmp)
        raise


async def apply_layer(layer: Path, root: Path, budget: layer_scan.Budget | None = None) -> None:
    """Apply one layer tarball (plain, gzip or zstd) onto ``root``, after its headers
    passed ``layer_scan`` (devices, owners, ``..``, the size and file-count caps)."""
    budget = budget if budget is not None else layer_scan.Budget.default()
    listing = await asyncio.to_thread(layer_scan.scan, layer, budget)
    for name in listing.whiteouts:
        _apply_whiteout(root, name)
    await asyncio.to_thread(_extract_chrooted, layer, root)
    for name in listing.devices:
        _remove_device(root, name)


def _remove_device(root: Path, name: str) -> None:
    """Remove a device node the layer made (resolved as inside the image, and only if
    it is still a device: a later entry of the same layer may have replaced it)."""
    rel = os.path.normpath("/" + name).lstrip("/")
    parent, base = os.path.split(rel)
    path = resolve_in_root(root, parent) / base
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        path.unlink()


def check_tree(root: Path) -> None:
    """After the last layer: the paths a sandbox mounts over must be real directories
    (runc and the agent mount there), and ``/etc`` too (the host writes a sandbox's
    identity files into it). A symlink ``/proc -> /`` or ``/.cellbox -> /etc`` is refused.
    The identity files themselves, if links or special files, are replaced by empty
    regular files: images do ship ``/etc/resolv.conf -> ../run/...``, and the sandbox
    gets its own anyway. Done on the image's own fresh tree, which nothing else writes."""
    for top in MOUNT_POINTS:
        path = root / top
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            what = f"a symlink to {os.readlink(path)!r}" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise layer_scan.ImageRefused(f"the image's /{top} is {what}; it must be a directory")
    etc = root / "etc"
    if not etc.exists():
        return
    for name in IDENTITY_FILES:
        path = etc / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                path.unlink()
            path.write_bytes(b"")


def _extract_chrooted(layer: Path, root: Path) -> None:
    tools = root / f".cellbox-unpack-{secrets.token_hex(8)}"
    tools.mkdir(mode=0o700)
    try:
        loader = _install_tar(tools)
        argv = ["chroot", str(root), f"/{tools.name}/{loader}", "--library-path", f"/{tools.name}",
                f"/{tools.name}/tar", "-x", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                "--exclude=.wh.*", "--exclude", tools.name, "-C", "/", "-f", "-"]
        unzip = layer_scan.decompressor(layer)
        with open(layer, "rb") as raw:
            source = subprocess.Popen(unzip, stdout=subprocess.PIPE, stderr=subprocess.PIPE) if unzip else None
            try:
                tar = subprocess.run(argv, stdin=source.stdout if source else raw, capture_output=True,
                                     timeout=LAYER_TIMEOUT, check=False)
            finally:
                if source is not None:
                    assert source.stdout is not None
                    source.stdout.close()
                    source.wait(60)
        if source is not None and source.returncode != 0:
            raise CommandFailed(unzip or [], source.returncode, source.stderr.read().decode(errors="replace")
                                if source.stderr else "")
        if tar.returncode != 0:
            err = tar.stderr.decode(errors="replace")
            if "No space left" in err or "Disk quota" in err:
                raise CommandFailed(["tar", "-x", str(layer)], tar.returncode, err)
            # Anything else tar stops at is the layer's doing (a path through a link
            # the image does not have, a name tar refuses): the image is refused.
            raise layer_scan.ImageRefused(f"layer {layer.name[:12]} could not be unpacked: {err.strip()[-800:]}")
    finally:
        if tools.is_symlink():
            tools.unlink()
        else:
            shutil.rmtree(tools, ignore_errors=True)


@functools.cache
def _tar_files() -> tuple[tuple[Path, str], ...]:
    """The host's GNU tar and every library it links (``ldd``), with the loader."""
    out = subprocess.run(["ldd", TAR], capture_output=True, text=True, check=True).stdout
    files = [(Path(TAR), "tar")]
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts and parts[0].startswith("/") else None
        if path and path.startswith("/"):
            files.append((Path(path), Path(path).name))
    return tuple(files)


def _install_tar(tools: Path) -> str:
    """Copy tar and its libraries into ``tools``; returns the loader's file name."""
    loader = ""
    for src, name in _tar_files():
        shutil.copy2(src, tools / name)
        if name.startswith("ld-linux"):
            loader = name
    if not loader:
        raise InternalFailure(f"no dynamic loader found for {TAR}")
    return loader


def _apply_whiteout(root: Path, name: str) -> None:
    rel = os.path.normpath("/" + (name[2:] if name.startswith("./") else name)).lstrip("/")
    parent, base = os.path.split(rel)
    directory = resolve_in_root(root, parent)
    if base == OPAQUE:
        if directory.is_dir() and not directory.is_symlink():
            for child in directory.iterdir():
                _remove(child)
        return
    _remove(directory / base[len(WHITEOUT):])


def resolve_in_root(root: Path, rel: str) -> Path:
    """``rel`` resolved as the kernel would inside a chroot at ``root``: symlinks,
    absolute ones included, and ``..`` never leave it."""
    parts = [p for p in rel.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            links += 1
            if links > _MAX_LINKS:
                raise InternalFailure(f"too many levels of symbolic links in {rel!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
