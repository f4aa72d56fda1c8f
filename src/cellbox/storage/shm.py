"""Resize a running sandbox's ``/dev/shm`` from the host (issue 14: it follows memory_mb).

Why the host and not the sandbox: the tenant is root in its sandbox but without
CAP_SYS_ADMIN, so neither it nor the agent can remount (measured: ``mount -o
remount,size=100m /dev/shm`` in a sandbox fails with status 32). That is also why
the size is a real bound (``bundle.shm_kib``: tmpfs pages are never freed by an OOM
kill) and why a live resize must change it: grown memory should give a bigger
``/dev/shm``, shrunk memory a smaller one.

How, without entering the sandbox: ``/proc/<init>/root`` is a handle on its root in
its own mount namespace; ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` walks
``dev/shm`` from there (a symlink cannot lead out); ``fspick`` opens that mount's
superblock for reconfiguration and ``fsconfig`` sets ``size`` and reconfigures it.
Nothing runs in the sandbox's namespaces and no program of its file system is
executed (``nsenter … mount`` would run the tenant's ``mount`` as host root). Checks:
the PID is still the sandbox's init (its cgroup names the sandbox, read after the
root was opened, so a reused PID is refused), the path is a mount root (``fspick``
refuses anything else), and the file system is tmpfs (``fstatfs``). The kernel
refuses a size below what ``/dev/shm`` holds (EINVAL): the resize then fails as a
whole, changing nothing.
"""

from __future__ import annotations

import ctypes
import errno
import os

from . import inroot

TMPFS_MAGIC = 0x01021994
_SYS_FSCONFIG, _SYS_FSPICK = 431, 433  # x86_64 and arm64 (the generic table)
_FSPICK_CLOEXEC, _FSPICK_EMPTY_PATH = 0x1, 0x8
_FSCONFIG_SET_STRING, _FSCONFIG_CMD_RECONFIGURE = 1, 7

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class ShmError(Exception):
    """``/dev/shm`` could not be resized (the message says why)."""


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        if what == "reconfigure" and err == errno.EINVAL:
            raise ShmError("its /dev/shm holds more than the new size")
        raise ShmError(f"/dev/shm {what}: {os.strerror(err)}")
    return ret


def _fs_type(fd: int) -> int:
    buf = ctypes.create_string_buffer(128)  # struct statfs: f_type is the first long
    _check(_libc.fstatfs(fd, buf), "fstatfs")
    return int.from_bytes(buf.raw[:8], "little")


def _is_init_of(pid: int, sandbox_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            return any(line.rstrip("\n").split("/")[-1] == sandbox_id for line in f)
    except OSError:
        return False


def current_kib(init_pid: int) -> int | None:
    """The size of the sandbox's /dev/shm (KiB), from its mount options; None if unknown."""
    try:
        with open(f"/proc/{init_pid}/mountinfo", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/dev/shm":
                    for opt in fields[-1].split(","):
                        if opt.startswith("size=") and opt[5:-1].isdigit() and opt.endswith("k"):
                            return int(opt[5:-1])
    except OSError:
        pass
    return None


def resize(init_pid: int, sandbox_id: str, size_kib: int) -> None:
    """Set the running sandbox's ``/dev/shm`` to ``size_kib``; ``ShmError`` if refused."""
    root = os.open(f"/proc/{init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    fds = [root]
    try:
        if not _is_init_of(init_pid, sandbox_id):
            raise ShmError(f"process {init_pid} is not the init of sandbox {sandbox_id}")
        shm = inroot.openat2(root, "dev/shm", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                             resolve=inroot.RESOLVE_IN_ROOT | inroot.RESOLVE_NO_MAGICLINKS)
        fds.append(shm)
        if _fs_type(shm) != TMPFS_MAGIC:
            raise ShmError("the sandbox's /dev/shm is not a tmpfs")
        fs = _check(_libc.syscall(_SYS_FSPICK, ctypes.c_int(shm), ctypes.c_char_p(b""),
                                  ctypes.c_uint(_FSPICK_CLOEXEC | _FSPICK_EMPTY_PATH)), "fspick")
        fds.append(fs)
        _check(_libc.syscall(_SYS_FSCONFIG, ctypes.c_int(fs), ctypes.c_uint(_FSCONFIG_SET_STRING),
                             ctypes.c_char_p(b"size"), ctypes.c_char_p(f"{int(size_kib)}k".encode()),
                             ctypes.c_int(0)), "size")
        _check(_libc.syscall(_SYS_FSCONFIG, ctypes.c_int(fs), ctypes.c_uint(_FSCONFIG_CMD_RECONFIGURE),
                             None, None, ctypes.c_int(0)), "reconfigure")
    finally:
        for fd in reversed(fds):
            os.close(fd)
