"""``storage/inroot.py``: every path resolves inside the tree, whatever links it holds.

No root needed: a temporary tree with hostile entries (absolute and ``..`` links out,
a loop, a FIFO), and a directory outside it that must stay untouched.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from cellbox.storage import inroot


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("host\n")
    (root / "real").mkdir()
    os.symlink(str(outside), root / "abs")  # absolute link to a host directory
    os.symlink("../../../../../../../../" + str(outside), root / "rel")  # climbing out with ..
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("/real", root / "inside")  # absolute, but to a directory of the tree
    os.mkfifo(root / "real" / "fifo")
    return root, outside


def test_links_out_resolve_inside(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    with inroot.Root(root) as r:
        for link in ("abs", "rel"):
            with pytest.raises(FileNotFoundError):  # root/<outside path> does not exist
                r.read_bytes(f"{link}/secret")
            with pytest.raises(FileNotFoundError):
                r.write_file(f"{link}/planted", b"x")
        with pytest.raises(FileNotFoundError):
            r.read_bytes("../../../../" + str(outside) + "/secret")
        with pytest.raises(OSError) as err:
            r.mkdir("loop1/x")
        assert err.value.errno == errno.ELOOP
    assert os.listdir(outside) == ["secret"]


def test_links_inside_are_followed(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with inroot.Root(root) as r:
        r.write_file("inside/f", b"data")
        assert (root / "real" / "f").read_bytes() == b"data"
        assert r.read_bytes("/../inside/f") == b"data"
        r.mkdir("inside", exist_ok=True)  # a link to a directory of the tree is one
        with pytest.raises(OSError):
            r.mkdir("abs", exist_ok=True)  # a dangling one (inside) is not


def test_write_replaces_links_and_special_files_without_opening(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    os.symlink(str(outside / "secret"), root / "real" / "hostname")
    with inroot.Root(root) as r:
        r.write_file("real/hostname", b"me\n")
        r.write_file("real/fifo", b"not blocked\n")  # a FIFO opened for writing would block
        st = r.lstat("real/hostname")
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
        assert r.read_bytes("real/fifo") == b"not blocked\n"
        assert not [n for n in os.listdir(root / "real") if n.startswith(".cellbox-tmp-")]
    assert (outside / "secret").read_text() == "host\n"


def test_only_regular_files_are_read(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with inroot.Root(root) as r:
        with pytest.raises(inroot.NotRegularFile):
            r.open_regular("real/fifo")  # would block in open() forever
        with pytest.raises(inroot.NotRegularFile):
            r.open_regular("real")
        r.write_file("real/big", b"x" * 5000)
        assert len(r.read_bytes("real/big", limit=100)) == 100


def test_magic_links_are_refused(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    os.symlink("/proc/self/root", root / "procroot")  # resolves inside: root/proc/... is absent
    os.symlink(f"/proc/{os.getpid()}/cwd", root / "cwd")
    with inroot.Root(root) as r:
        for name in ("procroot/etc/passwd", "cwd/x"):
            with pytest.raises(FileNotFoundError):
                r.read_bytes(name)
    # Through a real procfs (a tree whose "proc" is the host's), magic links still stop.
    with inroot.Root("/") as r:
        with pytest.raises(OSError) as err:
            r.read_bytes("proc/self/root/etc/hostname")
        assert err.value.errno in (errno.ELOOP, errno.EXDEV)


def test_make_real_dirs_replaces_whatever_is_in_the_way(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    os.symlink(str(outside), root / ".cellbox")
    (root / "proc").write_text("a file where a mount point goes")
    with inroot.Root(root) as r:
        assert r.make_real_dirs("/.cellbox")
        assert r.make_real_dirs("/proc")
        assert r.make_real_dirs("/sys/fs/cgroup")
        assert not r.make_real_dirs("/sys/fs/cgroup")  # nothing left to do
        with pytest.raises(OSError):
            r.make_real_dirs("/a/../b")
    assert (root / ".cellbox").is_dir() and not (root / ".cellbox").is_symlink()
    assert (root / "proc").is_dir() and (root / "sys" / "fs" / "cgroup").is_dir()
    assert os.listdir(outside) == ["secret"]


def test_entry_names_are_checked(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with inroot.Root(root) as r:
        for bad in ("", "/", "real/..", "."):
            with pytest.raises(OSError) as err:
                r.write_file(bad, b"x")
            assert err.value.errno == errno.EINVAL


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod and chown need root")
def test_device_nodes_are_neither_read_nor_written(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    os.mknod(root / "real" / "node", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    with inroot.Root(root) as r:
        with pytest.raises(inroot.NotRegularFile):
            r.open_regular("real/node")
        r.write_file("real/node", b"a file now\n", owner=(1234, 5678))
        st = r.lstat("real/node")
        assert stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid) == (1234, 5678)
