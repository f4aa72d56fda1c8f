"""Layer unpacking on its own: whiteouts (file and opaque), and a hostile layer that
tries to write through an absolute symlink left by a lower layer (it must land inside
the image, never on the host)."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from cellbox.storage import unpack
from cellbox.storage.layer_scan import ImageRefused

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chroot)")


def _layer(path: Path, entries: list[tuple[str, str, str]], *, gz: bool = False) -> Path:
    """entries: (kind, name, data) with kind file | dir | symlink (data = target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                raw = data.encode()
                info.size, info.mode = len(raw), 0o644
                tar.addfile(info, io.BytesIO(raw))
    path.write_bytes(gzip.compress(buf.getvalue()) if gz else buf.getvalue())
    return path


def test_whiteouts_and_no_escape_through_symlinks(tmp_path: Path) -> None:
    host_dir = tmp_path / "host-secret"
    host_dir.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    lower = _layer(tmp_path / "l1.tar", [
        ("dir", "a", ""), ("file", "a/keep", "k"), ("file", "a/gone", "g"),
        ("dir", "opq", ""), ("file", "opq/old", "o"),
        ("symlink", "evil", str(host_dir)),  # absolute: the host's directory, if followed outside
        ("symlink", "up", "../../.."),
    ])
    upper = _layer(tmp_path / "l2.tar.gz", [
        ("file", "up/escaped", "y"),
        ("file", "a/.wh.gone", ""), ("file", "opq/.wh..wh..opq", ""), ("file", "opq/new", "n"),
        ("file", "./.wh.nothing-there", ""),
    ], gz=True)
    hostile = _layer(tmp_path / "l3.tar", [("file", "evil/pwned", "x")])
    asyncio.run(unpack.apply_layer(lower, root))
    asyncio.run(unpack.apply_layer(upper, root))
    # Inside the chroot the absolute link points at a path the image does not have:
    # the layer is refused, and nothing reaches the host.
    with pytest.raises(ImageRefused):
        asyncio.run(unpack.apply_layer(hostile, root))
    assert not (host_dir / "pwned").exists(), "a layer wrote through a symlink onto the host"
    (root / str(host_dir).lstrip("/")).mkdir(parents=True)  # once the image has that path...
    asyncio.run(unpack.apply_layer(hostile, root))
    assert not (host_dir / "pwned").exists()
    assert (root / str(host_dir).lstrip("/") / "pwned").read_text() == "x"  # ...it lands inside
    assert not (tmp_path / "escaped").exists() and not Path("/escaped").exists()
    assert (root / "escaped").read_text() == "y"  # "../../.." stops at the image's root
    assert (root / "a" / "keep").exists() and not (root / "a" / "gone").exists()
    assert sorted(p.name for p in (root / "opq").iterdir()) == ["new"]
    assert not any(p.name.startswith((".wh.", ".cellbox-unpack-")) for p in root.rglob("*"))


def test_resolve_in_root_stays_inside(tmp_path: Path) -> None:
    (tmp_path / "lib").symlink_to("/usr/lib")
    (tmp_path / "loop").symlink_to("loop")
    assert unpack.resolve_in_root(tmp_path, "lib/x") == tmp_path / "usr" / "lib" / "x"
    assert unpack.resolve_in_root(tmp_path, "../../etc") == tmp_path / "etc"
    with pytest.raises(Exception, match="symbolic links"):
        unpack.resolve_in_root(tmp_path, "loop/x")
