"""The userns image rewrite that gives a restored sandbox its own id range."""

from __future__ import annotations

import os
import shutil

import pytest

from cellbox.errors import InternalFailure
from cellbox.runtime import criu_images


def test_userns_image_round_trip_and_retarget(tmp_path):
    images = tmp_path / "mem"
    images.mkdir()
    src_map = [(0, 0x10030000, 65536)]
    criu_images.write_userns(images / "userns-11.img", src_map, src_map)
    (images / "pages-1.img").write_bytes(b"p" * 100)
    (images / "work").mkdir()  # runc's work dir inside the images: not an image
    assert criu_images.read_userns(images / "userns-11.img") == (src_map, src_map)

    out = criu_images.retarget(images, 0x10050000, 65536, "sid")
    assert out == tmp_path / "mem.sid"
    new_map = [(0, 0x10050000, 65536)]
    assert criu_images.read_userns(out / "userns-11.img") == (new_map, new_map)
    assert criu_images.read_userns(images / "userns-11.img") == (src_map, src_map)  # shared one untouched
    assert os.stat(out / "pages-1.img").st_ino == os.stat(images / "pages-1.img").st_ino  # linked, not copied
    assert not (out / "work").exists()
    st = os.stat(out)
    assert (st.st_gid, st.st_mode & 0o777) == (0x10050000, 0o750)


def test_retarget_refuses_a_dump_without_a_user_namespace(tmp_path):
    (tmp_path / "mem").mkdir()
    with pytest.raises(InternalFailure):
        criu_images.retarget(tmp_path / "mem", 0x10050000, 65536, "x")
    assert not (tmp_path / "mem.x").exists()


def test_link_copy_is_private_links_that_outlive_the_source(tmp_path):
    images = tmp_path / "mem"
    images.mkdir()
    (images / "pages-1.img").write_bytes(b"p" * 8192)
    (images / "pagemap-1.img").write_bytes(b"m")
    (images / "work").mkdir()  # CRIU's work dir is not an image: not linked
    out = criu_images.link_copy(images, "sbx")
    assert out == tmp_path / "mem.sbx"
    assert (out.stat().st_mode & 0o777) == 0o700
    assert sorted(p.name for p in out.iterdir()) == ["pagemap-1.img", "pages-1.img"]
    assert (out / "pages-1.img").stat().st_ino == (images / "pages-1.img").stat().st_ino  # no data copied
    shutil.rmtree(images)  # a clone's capture goes as soon as its copies are up
    assert (out / "pages-1.img").read_bytes() == b"p" * 8192
