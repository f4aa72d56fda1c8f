"""Read a layer's headers before anything of it is written: refuse what no sandbox
needs and what could hurt the host, and bound what unpacking may cost.

A layer is untrusted input (any registry, any Dockerfile). GNU tar, chrooted into the
image (``unpack.py``), keeps every path inside it; this scan decides *what* may be
written at all, from the tar headers alone (no data is read, so a bomb costs only the
time to decompress up to the limit):

* **Size and inode caps** (``Budget``): the sum of the files' apparent sizes (a sparse
  file counts in full) and the number of entries, over all the layers one unpack
  applies. A gzip bomb or a layer of millions of empty files stops at the header that
  crosses the cap, before extraction, with the disk untouched. Without a cap the only
  bound would be the pool (a 64 GiB sparse file on the host's disk).
* **Device nodes** are listed, and removed right after their layer is extracted
  (``unpack.apply_layer``): no image needs one (runc mounts a fresh ``/dev``), and even
  though runc's devices cgroup would deny access inside a sandbox, a device node in a
  rootfs is a trap for anything on the host that opens a file there. Not refused:
  debootstrap-made images, the default one included, ship ``/dev/console`` & co.
* **Owners above 65535** are refused: a sandbox maps ids 0-65535 (the user-namespace
  range), so such a file would belong to a host id outside the sandbox's range, as
  Docker with userns-remap refuses it too ("lchown: invalid argument").
* **``..`` in a name or a hard link's target** is refused (GNU tar would skip the
  member with an error; a clear refusal names it).

Setuid/setgid files and file capabilities are kept: images need them (``su``,
``ping``), and inside a sandbox they grant nothing, since every process runs with
``noNewPrivileges``.

Python's ``tarfile`` reads the headers (GNU, pax and sparse formats); the layer is
decompressed by the same ``gzip``/``zstd`` tools the extraction uses.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidRequest

WHITEOUT = ".wh."
MAX_ID = 65535
# Deliberate defaults, overridable per host: 16 GiB unpacked is far more than any
# sandbox image we ship (the default image is ~0.5 GiB) and a quarter of the default
# pool; a million entries is ~50x the default image's. Read at each unpack.
MAX_BYTES = 16 << 30
MAX_ENTRIES = 1_000_000


class ImageRefused(InvalidRequest):
    """An image's content is refused (the registry's or the build's input): a 4xx."""

    status = 422
    code = "IMAGE_REFUSED"


@dataclass
class Budget:
    """What one unpack may still write (shared by its layers)."""

    max_bytes: int = 0
    max_entries: int = 0
    bytes: int = 0
    entries: int = 0

    @classmethod
    def default(cls) -> "Budget":
        """The host's caps: ``CELLBOX_IMAGE_MAX_BYTES`` / ``CELLBOX_IMAGE_MAX_FILES``."""
        return cls(max_bytes=int(os.environ.get("CELLBOX_IMAGE_MAX_BYTES", MAX_BYTES)),
                   max_entries=int(os.environ.get("CELLBOX_IMAGE_MAX_FILES", MAX_ENTRIES)))


def decompressor(layer: Path) -> list[str] | None:
    """The command that decompresses ``layer`` to stdout, or None if it is a plain tar."""
    with open(layer, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        return ["gzip", "-dc", str(layer)]
    if magic == b"\x28\xb5\x2f\xfd":
        return ["zstd", "-dcq", str(layer)]
    return None


@dataclass
class Listing:
    """What the extraction must treat specially."""

    whiteouts: list[str] = field(default_factory=list)  # applied before extracting, never extracted
    devices: list[str] = field(default_factory=list)  # removed right after extracting


def scan(layer: Path, budget: Budget) -> Listing:
    """Check every header of ``layer`` (raises :class:`ImageRefused`); returns the
    whiteouts and device nodes it holds, in order."""
    label = f"layer {layer.name[:12]}"
    unzip = decompressor(layer)
    proc = subprocess.Popen(unzip, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) if unzip else None
    stream = proc.stdout if proc is not None else open(layer, "rb")
    assert stream is not None
    listing = Listing()
    try:
        try:
            # A plain layer (what builds store) is read seekable: tarfile skips over the
            # data instead of reading it. A compressed one is a stream.
            tar = tarfile.open(fileobj=stream, mode="r|" if proc is not None else "r:")
            # next() rather than iteration, with the member list emptied each time:
            # tarfile keeps every header it read, which a million-entry layer must not cost.
            while (member := tar.next()) is not None:
                tar.members.clear()  # type: ignore[attr-defined]  # tarfile's own list, not in its stubs
                _check(member, budget, label)
                if os.path.basename(member.name.rstrip("/")).startswith(WHITEOUT):
                    listing.whiteouts.append(member.name)
                elif member.ischr() or member.isblk():
                    listing.devices.append(member.name)
        except (tarfile.TarError, EOFError) as exc:
            raise ImageRefused(f"{label} is not a valid tar archive: {exc}") from None
    finally:
        stream.close()
        if proc is not None:
            proc.kill()  # an early refusal leaves the rest undecompressed
            proc.wait()
    return listing


def _check(m: tarfile.TarInfo, budget: Budget, label: str) -> None:
    name = m.name
    budget.entries += 1
    if budget.entries > budget.max_entries:
        raise ImageRefused(f"{label}: the image has more than {budget.max_entries} files "
                           f"(CELLBOX_IMAGE_MAX_FILES); refused as a tar bomb")
    if m.isreg():
        budget.bytes += max(m.size, 0)
        if budget.bytes > budget.max_bytes:
            raise ImageRefused(f"{label}: the image unpacks to more than {budget.max_bytes >> 20} MiB "
                               f"(CELLBOX_IMAGE_MAX_BYTES; {name!r} alone is {m.size >> 20} MiB); "
                               "refused as a tar bomb")
    if not 0 <= m.uid <= MAX_ID or not 0 <= m.gid <= MAX_ID:
        raise ImageRefused(f"{label}: {name!r} is owned by {m.uid}:{m.gid}, outside the ids 0-{MAX_ID} "
                           "a sandbox maps")
    if ".." in name.split("/"):
        raise ImageRefused(f"{label}: the entry name {name!r} climbs out with '..'")
    if m.islnk() and (".." in m.linkname.split("/")):
        raise ImageRefused(f"{label}: the hard link {name!r} points out with '..' ({m.linkname!r})")
