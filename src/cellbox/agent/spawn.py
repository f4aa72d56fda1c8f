"""Fork/exec of one child with pipes, a new session and an identity switch.

``subprocess.Popen`` is used only as a fork/exec primitive: its C helper
(``_posixsubprocess``) is async-signal-safe, performs setsid, setgroups/
setgid/setuid and chdir in the child, and reports exec failures back
synchronously over a CLOEXEC pipe -- which is what lets the API answer a clean
4xx for "command not found" or "bad working_dir" before anything else happens.
Waiting is *not* done through Popen; see ``processes.py`` (the SIGCHLD reaper).

Pipes are created here with ``O_CLOEXEC`` (the child's ends are dup2'ed onto
0/1/2, which clears the flag there); the parent's ends are returned
non-blocking for ``loop.add_reader``/``add_writer``.
"""

from __future__ import annotations

import os
import subprocess

from .errors import APIError
from .users import Identity


class SpawnSpec:
    """A validated start/run request."""

    __slots__ = (
        "command",
        "args",
        "env",
        "working_dir",
        "identity",
        "stdin_pipe",
        "capture_stdout",
        "capture_stderr",
        "name",
        "timeout",
    )

    def __init__(
        self,
        command: str,
        args: list[str],
        env: dict[str, str],
        working_dir: str | None,
        identity: Identity,
        stdin_pipe: bool = False,
        capture_stdout: bool = True,
        capture_stderr: bool = True,
        name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.command = command
        self.args = args
        self.env = env
        self.working_dir = working_dir
        self.identity = identity
        self.stdin_pipe = stdin_pipe
        self.capture_stdout = capture_stdout
        self.capture_stderr = capture_stderr
        self.name = name
        self.timeout = timeout


class Child:
    """A freshly exec'd child and the parent's ends of its pipes."""

    __slots__ = ("popen", "stdin_fd", "stdout_fd", "stderr_fd")

    def __init__(
        self, popen: subprocess.Popen[bytes], stdin_fd: int | None, stdout_fd: int | None, stderr_fd: int | None
    ) -> None:
        self.popen = popen
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd


def spawn_child(spec: SpawnSpec, cwd: str, env: dict[str, str]) -> Child:
    """Start ``spec`` in its own session; raises APIError(400) if it cannot run."""
    if not os.path.isdir(cwd):
        raise APIError(400, "INVALID_WORKING_DIR", f"working_dir {cwd!r} is not an existing directory")
    parent_fds: list[int] = []
    child_fds: list[int] = []
    stdin_arg: int = subprocess.DEVNULL
    stdout_arg: int = subprocess.DEVNULL
    stderr_arg: int = subprocess.DEVNULL
    stdin_w = out_r = err_r = None
    try:
        if spec.stdin_pipe:
            stdin_arg, stdin_w = os.pipe2(os.O_CLOEXEC)
            child_fds.append(stdin_arg)
            parent_fds.append(stdin_w)
        if spec.capture_stdout:
            out_r, stdout_arg = os.pipe2(os.O_CLOEXEC)
            parent_fds.append(out_r)
            child_fds.append(stdout_arg)
        if spec.capture_stderr:
            err_r, stderr_arg = os.pipe2(os.O_CLOEXEC)
            parent_fds.append(err_r)
            child_fds.append(stderr_arg)
        popen = subprocess.Popen(
            [spec.command, *spec.args],
            stdin=stdin_arg,
            stdout=stdout_arg,
            stderr=stderr_arg,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=True,  # setsid: own session + process group
            restore_signals=True,  # SIGPIPE etc. back to default in the child
            **spec.identity.popen_kwargs(),
        )
    except BaseException as exc:
        for fd in parent_fds:
            close_fd(fd)
        raise spawn_error(exc, spec.command, cwd) from None
    finally:
        for fd in child_fds:
            close_fd(fd)
    for fd in parent_fds:
        os.set_blocking(fd, False)
    return Child(popen, stdin_w, out_r, err_r)


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def spawn_error(exc: BaseException, command: str, cwd: str) -> BaseException:
    """Map a Popen failure onto a clear 4xx (or re-raise non-OS errors)."""
    if isinstance(exc, OSError):
        failed_on_cwd = getattr(exc, "filename", None) == cwd
        if failed_on_cwd:
            return APIError(400, "INVALID_WORKING_DIR", f"cannot chdir to {cwd!r}: {exc.strerror}")
        if isinstance(exc, FileNotFoundError):
            return APIError(400, "COMMAND_NOT_FOUND", f"command not found: {command!r}")
        if isinstance(exc, PermissionError):
            return APIError(400, "PERMISSION_DENIED", f"cannot execute {command!r}: {exc.strerror}")
        return APIError(400, "SPAWN_FAILED", f"cannot execute {command!r}: {exc.strerror or exc}")
    if isinstance(exc, (ValueError, TypeError)):
        return APIError(400, "INVALID_REQUEST", f"invalid command: {exc}")
    return exc
