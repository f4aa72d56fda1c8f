"""Restore CRIU images into a user namespace with another id range than the dump's.

CRIU dumps a container's user namespace with its ``uid_map``/``gid_map``
(``userns-<id>.img``) and restores that mapping, not the one in runc's bundle: a
clone or a restore from a snapshot would come back in the *source's* id range (two
live sandboxes sharing host ids) and its new idmapped rootfs (the new range) would
show every file as unmapped ("nobody"; writes fail with EOVERFLOW). Creds and file
owners in the other images are stored as ids inside the namespace, so only the
mapping needs changing.

The images of a snapshot are shared by every restore of it (three clones at once),
so they are never edited in place: :func:`retarget` makes a directory beside them
with hard links to every image (no data copied) and a rewritten userns image.

Format (criu/include/magic.h, images/userns.proto): two little-endian u32 magics
(``IMG_COMMON_MAGIC``, ``USERNS_MAGIC``), then entries of a u32 size and a protobuf
``userns_entry { repeated uid_gid_extent uid_map = 1; ... gid_map = 2; }`` with
``uid_gid_extent { uint32 first = 1; uint32 lower_first = 2; uint32 count = 3; }``.
Small enough to hand-code; pulling in crit and protobuf for one message is not.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from ..errors import InternalFailure
from . import userns

IMG_COMMON_MAGIC, USERNS_MAGIC = 0x54564319, 0x55474906
Extent = tuple[int, int, int]  # (first inside, first outside, count)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _decode_extent(buf: bytes) -> Extent:
    fields = {1: 0, 2: 0, 3: 0}
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        if tag & 7 != 0:
            raise InternalFailure("unexpected wire type in a CRIU uid_gid_extent")
        fields[tag >> 3], pos = _varint(buf, pos)
    return fields[1], fields[2], fields[3]


def _decode_entry(buf: bytes) -> tuple[list[Extent], list[Extent]]:
    maps: dict[int, list[Extent]] = {1: [], 2: []}
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        if tag & 7 != 2 or tag >> 3 not in maps:
            raise InternalFailure("unexpected field in a CRIU userns_entry")
        size, pos = _varint(buf, pos)
        maps[tag >> 3].append(_decode_extent(buf[pos:pos + size]))
        pos += size
    return maps[1], maps[2]


def _encode_entry(uid_map: list[Extent], gid_map: list[Extent]) -> bytes:
    out = bytearray()
    for field, extents in ((1, uid_map), (2, gid_map)):
        for first, lower, count in extents:
            sub = b"".join(_enc_varint(x) for x in (0x08, first, 0x10, lower, 0x18, count))
            out += _enc_varint(field << 3 | 2) + _enc_varint(len(sub)) + sub
    return bytes(out)


def read_userns(path: Path) -> tuple[list[Extent], list[Extent]]:
    data = path.read_bytes()
    magic, kind = struct.unpack_from("<II", data, 0)
    if (magic, kind) != (IMG_COMMON_MAGIC, USERNS_MAGIC):
        raise InternalFailure(f"{path.name} is not a CRIU userns image")
    (size,) = struct.unpack_from("<I", data, 8)
    return _decode_entry(data[12:12 + size])


def write_userns(path: Path, uid_map: list[Extent], gid_map: list[Extent]) -> None:
    body = _encode_entry(uid_map, gid_map)
    path.write_bytes(struct.pack("<III", IMG_COMMON_MAGIC, USERNS_MAGIC, len(body)) + body)


def userns_images(images: Path) -> list[Path]:
    return sorted(images.glob("userns-*.img"))


def link_copy(images: Path, tag: str) -> Path:
    """A private directory ``<images>.<tag>`` of hard links to every image (no data
    copied), root's alone: a lazy restore's daemon reads it after the restore returns,
    while the shared images (a clone's tmpfs capture) may already be gone."""
    out = images.with_name(f"{images.name}.{tag}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(mode=0o700)
    try:
        for entry in os.scandir(images):
            if entry.is_file(follow_symlinks=False):
                os.link(entry.path, out / entry.name)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def retarget(images: Path, base: int, size: int, tag: str) -> Path:
    """A new image directory ``<images>.<tag>`` whose user namespace maps 0..size-1 to
    ``base``, reachable by that range only (the caller removes it after the restore).

    Always a new directory, even when the mapping already matches (a snapshot restored
    at the address its source had): CRIU opens the images from inside the user
    namespace, and the shared images themselves stay 0700, out of every sandbox's
    reach.
    """
    found = userns_images(images)
    if not found:
        raise InternalFailure("the memory image has no user namespace to restore into a new id range")
    wanted = [(0, base, size)]
    out = images.with_name(f"{images.name}.{tag}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(mode=0o700)
    try:
        userns.restrict(out, base)
        for entry in os.scandir(images):
            if entry.is_file(follow_symlinks=False) and not entry.name.startswith("userns-"):
                os.link(entry.path, out / entry.name)
        for p in found:
            uid_map, gid_map = read_userns(p)
            if len(uid_map) != 1 or len(gid_map) != 1 or uid_map[0][2] != size or gid_map[0][2] != size:
                raise InternalFailure(f"unexpected user namespace mapping in {p.name}: {uid_map} {gid_map}")
            write_userns(out / p.name, wanted, wanted)
            os.chmod(out / p.name, os.stat(p).st_mode & 0o7777)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out
