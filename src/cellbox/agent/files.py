"""Sandbox file API: path confinement and the blocking file operations.

Paths in requests are absolute *sandbox* paths.  They are mapped under a
configurable root (``--root``, default ``/``): inside a sandbox the agent runs
in the container's mount namespace, so ``/`` *is* the sandbox; host-side tests
point ``--root`` at a temp dir.

Confinement rules (403 ``PATH_TRAVERSAL``):
  * any ``..`` component is refused outright (like the reference daemon), so
    no lexical trick can climb out of the root;
  * the existing part of the path is resolved with ``os.path.realpath`` and
    must stay inside the root -- this catches symlinks that point outside
    (note: an *absolute* symlink is resolved against the host view, i.e. with
    ``--root /tmp/x`` a link to ``/etc`` escapes and is refused; with the
    production root ``/`` every path is inside by definition);
  * the final component is opened with ``O_NOFOLLOW`` so a symlink swapped in
    after the check is not followed (intermediate components keep a small
    TOCTOU window; acceptable because in production the root is ``/``).
Relative paths, empty paths and paths containing NUL are 400 ``INVALID_PATH``.

Writes go to a temp file in the target directory followed by ``rename`` so a
reader never sees a half-written file and an interrupted upload leaves the old
content intact; parent directories are created; an existing file's mode (and
owner, when we are root) is preserved.  ``DELETE`` on a directory removes it
recursively (``shutil.rmtree``, which never follows symlinks); deleting the
root itself is refused.

File I/O is done synchronously on the event loop in bounded chunks: local-disk
reads/writes of 256 KiB return in well under a millisecond, and it keeps the
agent single-threaded (which makes ``fork`` for spawning safe).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from .errors import APIError

CHUNK = 256 * 1024


class FileRoot:
    """Maps sandbox paths to host paths under ``root`` and enforces confinement."""

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.realpath(root)
        self._prefix = self.root if self.root.endswith("/") else self.root + "/"
        self._counter = 0

    # -------------------------------------------------------------- mapping
    def normalize(self, path: Any) -> list[str]:
        """Validate a sandbox path and return its components."""
        if not isinstance(path, str) or not path:
            raise APIError(400, "INVALID_PATH", "query parameter 'path' is required")
        if "\x00" in path:
            raise APIError(400, "INVALID_PATH", "path must not contain NUL bytes")
        if not path.startswith("/"):
            raise APIError(400, "INVALID_PATH", f"path must be absolute: {path!r}")
        parts = [p for p in path.split("/") if p and p != "."]
        if ".." in parts:
            raise APIError(403, "PATH_TRAVERSAL", "path traversal detected: '..' is not allowed")
        return parts

    def _host(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts) if parts else self.root

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self._prefix)

    def _check(self, real: str) -> str:
        if not self.inside(real):
            raise APIError(403, "PATH_TRAVERSAL", "path resolves outside the sandbox root")
        return real

    def resolve(self, path: Any) -> str:
        """Fully resolved host path (symlinks followed, must stay inside)."""
        return self._check(os.path.realpath(self._host(self.normalize(path))))

    def resolve_parent(self, path: Any) -> tuple[str, str]:
        """Resolved parent directory and the (unresolved) final name."""
        parts = self.normalize(path)
        if not parts:
            raise APIError(400, "INVALID_PATH", "the sandbox root itself is not a file")
        parent = self._check(os.path.realpath(self._host(parts[:-1])))
        return parent, parts[-1]

    # ---------------------------------------------------------- operations
    def open_read(self, path: Any) -> tuple[int, int | None]:
        """Open a regular file for reading -> (fd, size or None if unknown)."""
        real = self.resolve(path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise os_error(exc, path) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise APIError(
                    400,
                    "IS_DIRECTORY",
                    f"path is a directory, not a file: {path}. Use /api/v1/files/list to list it.",
                )
            if not stat.S_ISREG(st.st_mode):
                raise APIError(400, "NOT_A_REGULAR_FILE", f"not a regular file: {path}")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        # procfs/sysfs report size 0 for files that do have content: stream those.
        return fd, (st.st_size or None)

    def list_dir(self, path: Any) -> list[dict[str, Any]]:
        real = self.resolve(path)
        try:
            st = os.stat(real)
        except OSError as exc:
            raise os_error(exc, path) from None
        if not stat.S_ISDIR(st.st_mode):
            raise APIError(400, "NOT_A_DIRECTORY", f"path is not a directory: {path}")
        entries: list[dict[str, Any]] = []
        try:
            with os.scandir(real) as it:
                for entry in it:
                    try:
                        est = entry.stat()  # follows symlinks, like ls -L
                    except OSError:
                        try:
                            est = entry.stat(follow_symlinks=False)  # dangling link
                        except OSError:
                            continue
                    is_dir = stat.S_ISDIR(est.st_mode)
                    entries.append(
                        {
                            "name": _text(entry.name),
                            "is_dir": is_dir,
                            "size": None if is_dir else est.st_size,
                            "modified_at": est.st_mtime_ns // 1_000_000,
                        }
                    )
        except OSError as exc:
            raise os_error(exc, path) from None
        entries.sort(key=lambda e: (not e["is_dir"], e["name"]))
        return entries

    def begin_write(self, path: Any) -> "Upload":
        """Validate the target, create parents, open a temp file next to it."""
        parent, name = self.resolve_parent(path)
        try:
            os.makedirs(parent, exist_ok=True)
        except FileExistsError:
            raise APIError(400, "NOT_A_DIRECTORY", f"a parent of {path} is not a directory") from None
        except OSError as exc:
            raise os_error(exc, path) from None
        self._check(os.path.realpath(parent))  # makedirs may have walked through a symlink
        final = os.path.join(parent, name)
        try:
            existing: os.stat_result | None = os.lstat(final)
        except FileNotFoundError:
            existing = None
        except OSError as exc:
            raise os_error(exc, path) from None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise APIError(400, "IS_DIRECTORY", f"path is a directory: {path}")
        self._counter += 1
        tmp = os.path.join(parent, f".{name[:100]}.cellbox-upload.{os.getpid()}.{self._counter}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise os_error(exc, path) from None
        return Upload(fd, tmp, final, existing, str(path))

    def delete(self, path: Any) -> None:
        parent, name = self.resolve_parent(path)
        target = os.path.join(parent, name)
        try:
            st = os.lstat(target)
            if stat.S_ISDIR(st.st_mode):
                import shutil  # lazy: only needed here, keeps start-up lean

                shutil.rmtree(target)
            else:
                os.unlink(target)  # a symlink is removed itself, never its target
        except OSError as exc:
            raise os_error(exc, path) from None


class Upload:
    """An in-progress streamed upload into a temp file."""

    def __init__(self, fd: int, tmp: str, final: str, existing: os.stat_result | None, path: str) -> None:
        self.fd: int | None = fd
        self.tmp = tmp
        self.final = final
        self.existing = existing
        self.path = path

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            raise os_error(exc, self.path) from None

    def commit(self) -> None:
        assert self.fd is not None
        fd, self.fd = self.fd, None
        try:
            if self.existing is not None and stat.S_ISREG(self.existing.st_mode):
                os.fchmod(fd, stat.S_IMODE(self.existing.st_mode))
                if os.geteuid() == 0:
                    os.fchown(fd, self.existing.st_uid, self.existing.st_gid)
            os.close(fd)
            os.rename(self.tmp, self.final)
        except OSError as exc:
            _unlink(self.tmp)
            raise os_error(exc, self.path) from None

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            _unlink(self.tmp)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _text(name: str) -> str:
    """File names are bytes; undecodable ones become U+FFFD (strict JSON clients)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def os_error(exc: OSError, path: Any) -> APIError:
    """Translate an OSError into the daemon's error codes."""
    code = exc.errno
    if code == errno.ENOENT:
        return APIError(404, "NOT_FOUND", f"file not found: {path}")
    if code == errno.EISDIR:
        return APIError(400, "IS_DIRECTORY", f"path is a directory: {path}")
    if code == errno.ENOTDIR:
        return APIError(400, "NOT_A_DIRECTORY", f"a component of {path} is not a directory")
    if code == errno.ELOOP:
        return APIError(403, "PATH_TRAVERSAL", f"refusing to follow a symlink: {path}")
    if code in (errno.EACCES, errno.EPERM):
        return APIError(403, "PERMISSION_DENIED", f"permission denied: {path}")
    if code == errno.EROFS:
        return APIError(403, "READ_ONLY", f"read-only file system: {path}")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return APIError(507, "NO_SPACE", f"no space left on device: {path}")
    if code == errno.ENOTEMPTY:
        return APIError(409, "NOT_EMPTY", f"directory not empty: {path}")
    # What a client's path can provoke is the client's problem (4xx), never ours: a name
    # over NAME_MAX (255) or a path over PATH_MAX, a mount point or a running binary.
    if code == errno.ENAMETOOLONG:
        return APIError(400, "NAME_TOO_LONG", f"file name or path too long (a name is at most 255 bytes, "
                                              f"a path 4095): {_clip(path)}")
    if code in (errno.EBUSY, errno.ETXTBSY):
        return APIError(409, "BUSY", f"{exc.strerror}: {_clip(path)} (a mount point or a file in use)")
    if code == errno.EXDEV:
        return APIError(409, "CROSS_DEVICE", f"{exc.strerror}: {_clip(path)}")
    if code == errno.EFBIG:
        return APIError(413, "FILE_TOO_LARGE", f"{exc.strerror}: {_clip(path)}")
    if code in (errno.EINVAL, errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP, errno.EMLINK):
        return APIError(400, "INVALID_PATH", f"{exc.strerror}: {_clip(path)}")
    return APIError(500, "IO_ERROR", f"{exc.strerror or exc}: {_clip(path)}")


def _clip(path: Any, limit: int = 200) -> str:
    """A path short enough for an error message (a 5,000-character one echoed back is noise)."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
