"""File operations inside a directory tree that someone else controls.

A sandbox's root filesystem (and every snapshot or registered image made from it)
belongs to its tenant, symlinks and special files included. When the host works on
such a tree (writes ``/etc/hostname`` into a clone, pre-reads files into the page
cache, makes a mount point), a path joined onto the tree's host path and opened with
``open()`` follows the tenant's symlinks *on the host*: ``/etc -> /root/.ssh`` in the
tenant's tree made the server write into the host's ``/root/.ssh``. Checking with
``is_symlink()`` first does not help: any component can be a link, and a running
tenant can swap it between the check and the use.

So every path is resolved by the kernel as if the tree were ``/``:
``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`` (Linux >= 5.6).
Absolute links and ``..`` stop at the tree's root, ``/proc/self/...``-style magic
links are refused, and no mount point is crossed (there are none inside a tree on the
host's side). The last step uses a ``*at`` call on the resolved parent's fd, with
``O_NOFOLLOW`` / ``AT_SYMLINK_NOFOLLOW`` where a final link must not be followed:
files are replaced by ``renameat`` of a new file (never opened for writing, so a FIFO
or a device node in its place is replaced, not opened), and a file is read only after
an ``O_PATH`` open and ``fstat`` proved it a regular file.

Why ctypes and not a library: Debian 12's glibc (2.36) has no ``openat2`` wrapper,
so the raw syscall (437 on x86_64 and arm64) is called with ``struct open_how``. The
well-kept binding, ``pathrs`` (PyPI 0.2.6), needs the Rust ``libpathrs.so``, which
Debian 12 does not package and whose build needs a newer Rust than Debian's 1.63.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from pathlib import Path
from types import TracebackType

# <linux/openat2.h>
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
# For walking one component at a time where no link at all may be followed.
NO_LINKS = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV

_SYS_OPENAT2 = 437  # the same number on x86_64 and in asm-generic (arm64, riscv)
_EAGAIN_RETRIES = 100
_TMP_PREFIX = ".cellbox-tmp-"


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class NotRegularFile(OSError):
    """The path names something other than a regular file (a FIFO, a device, a
    directory): the host never opens those for reading."""


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = IN_ROOT) -> int:
    """The ``openat2`` system call; raises ``OSError`` like ``os.open``."""
    # open_how.mode must be 0 unless the call creates (openat2 is strict: EINVAL);
    # O_TMPFILE includes O_DIRECTORY's bit, hence the full-mask test.
    creates = flags & os.O_CREAT or (flags & os.O_TMPFILE) == os.O_TMPFILE
    how = _OpenHow(flags | os.O_CLOEXEC, mode if creates else 0, resolve)
    encoded = os.fsencode(path)
    retries = _EAGAIN_RETRIES
    while True:
        fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(dirfd), ctypes.c_char_p(encoded), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        # EAGAIN: the kernel saw a concurrent rename in the tree (RESOLVE_IN_ROOT will
        # not guess across it); the man page says retry. Bounded: a tenant renaming in
        # a loop gets an error, not a spinning server.
        if err == errno.EAGAIN and retries > 0:
            retries -= 1
            continue
        raise OSError(err, os.strerror(err), path)


def _split(rel: str) -> tuple[str, str]:
    """``a/b/c`` -> (``a/b``, ``c``); the last component must name an entry."""
    parent, _, name = rel.strip("/").rpartition("/")
    if name in ("", ".", ".."):
        raise OSError(errno.EINVAL, "not a path to an entry", rel)
    return parent or ".", name


class Root:
    """A directory tree opened once; every path given to its methods is resolved inside
    it (``/`` and ``..`` are its root), whatever links the tree holds."""

    def __init__(self, path: Path | str) -> None:
        # The root itself is a path of ours (the pool's), not the tenant's; O_NOFOLLOW
        # still refuses a root that is a link.
        self.path = Path(path)
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Root":
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- resolving -----------------------------------------------------------------------

    def open(self, rel: str, flags: int, mode: int = 0o644) -> int:
        """An fd for ``rel`` resolved inside the tree (links followed, inside it)."""
        return openat2(self.fd, rel, flags, mode)

    def _parent(self, rel: str) -> tuple[int, str]:
        parent, name = _split(rel)
        return self.open(parent, os.O_PATH | os.O_DIRECTORY), name

    def lstat(self, rel: str) -> os.stat_result:
        """``lstat`` of ``rel``'s last component (its parents resolved inside the tree)."""
        pfd, name = self._parent(rel)
        try:
            return os.stat(name, dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)

    def listdir(self, rel: str) -> list[str]:
        fd = self.open(rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------

    def open_regular(self, rel: str) -> int:
        """A read-only fd on ``rel`` if it is a regular file; ``NotRegularFile`` if not.

        Opened ``O_PATH`` first (which opens nothing: no FIFO blocks, no device driver
        runs), checked with ``fstat``, then reopened through ``/proc/self/fd``: the same
        inode, with no second path walk a tenant could race."""
        pfd = self.open(rel, os.O_PATH)
        try:
            st = os.fstat(pfd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(errno.EINVAL, "not a regular file", rel)
            return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        finally:
            os.close(pfd)

    def read_bytes(self, rel: str, limit: int = 1 << 20) -> bytes:
        """At most ``limit`` bytes of a regular file (a tenant's file can be any size)."""
        fd = self.open_regular(rel)
        try:
            chunks, left = [], limit
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    # -- writing -------------------------------------------------------------------------

    def write_file(self, rel: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
        """Create or replace ``rel`` with ``data``: a new file in the resolved parent,
        renamed over the old entry. Whatever was there (a link, a FIFO, a device node)
        is replaced without being opened; a directory there is an error (EISDIR).
        ``owner`` (host uid, gid) is set on the new file before it appears under its
        name (a user-namespaced sandbox's root is not host uid 0)."""
        pfd, name = self._parent(rel)
        try:
            tmp = _TMP_PREFIX + secrets.token_hex(8)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=pfd)
            try:
                try:
                    os.fchmod(fd, mode)  # not the umask's idea of it
                    if owner is not None:
                        os.fchown(fd, *owner)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=pfd)
                except FileNotFoundError:
                    pass
                raise
        finally:
            os.close(pfd)

    def mkdir(self, rel: str, mode: int = 0o755, exist_ok: bool = False) -> None:
        """``mkdir`` in the resolved parent. With ``exist_ok``, an existing entry is
        fine if it resolves (inside the tree) to a directory."""
        pfd, name = self._parent(rel)
        try:
            os.mkdir(name, mode, dir_fd=pfd)
        except FileExistsError:
            if not exist_ok:
                raise
            os.close(self.open(rel, os.O_PATH | os.O_DIRECTORY))  # ENOTDIR, ENOENT, ELOOP...
        finally:
            os.close(pfd)

    def unlink(self, rel: str) -> None:
        pfd, name = self._parent(rel)
        try:
            os.unlink(name, dir_fd=pfd)
        finally:
            os.close(pfd)

    def rename(self, src: str, dst: str) -> None:
        sfd, sname = self._parent(src)
        try:
            dfd, dname = self._parent(dst)
            try:
                os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def make_real_dirs(self, rel: str, mode: int = 0o755) -> bool:
        """Make every component of ``rel`` a directory *at its own place*: no link is
        followed, and an entry that is not a directory (a link, a file, a FIFO) is
        removed and replaced by an empty directory. For mount points, which the
        runtime mounts over (the tenant never sees what was there). Returns whether
        anything had to change."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise OSError(errno.EINVAL, "'..' in a mount point", rel)
        changed = False
        cur = os.dup(self.fd)
        try:
            for part in parts:
                try:
                    st: os.stat_result | None = os.stat(part, dir_fd=cur, follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    os.unlink(part, dir_fd=cur)
                    st = None
                if st is None:
                    os.mkdir(part, mode, dir_fd=cur)
                    changed = True
                nxt = openat2(cur, part, os.O_PATH | os.O_DIRECTORY, resolve=NO_LINKS)
                os.close(cur)
                cur = nxt
        finally:
            os.close(cur)
        return changed
