"""``cellbox ssh`` driven through a real pseudo-terminal, and ``cellbox tunnel``."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

import httpx
import pytest

from ..sdk.live_server import CELLBOX, free_port

pytestmark = pytest.mark.root


def _read_until_exit(fd: int, pid: int, timeout: float) -> tuple[bytes, int]:
    """Collect the terminal's output until the child closes it; return it and the exit status."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child has closed the terminal
                chunk = b""
            if not chunk:
                break
            out += chunk
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return out, os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"cellbox ssh did not exit; output so far: {out!r}")


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, pattern: bytes, timeout: float = 30) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, out):
        assert time.monotonic() < deadline, f"{pattern!r} never appeared in {out!r}"
        if select.select([fd], [], [], 0.2)[0]:
            out += os.read(fd, 4096)
    return out


def test_ssh_interactive_exit_status(cli, sandbox_id):
    """A real terminal: raw mode, the initial size, SIGWINCH -> resize, and the shell's exit code."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: cellbox ssh on the new terminal
        try:
            _set_size(0, 30, 100)
            os.environ.update(cli.server.env())
            os.execv(str(CELLBOX), [str(CELLBOX), "ssh", sandbox_id, "-s", "/bin/bash"])
        finally:
            os._exit(127)
    try:
        _read_until(fd, rb"[#$] ", timeout=60)  # the prompt: bash may drop keys typed before it
        os.write(fd, b"stty size\r")
        _read_until(fd, rb"30 100")
        _set_size(fd, 33, 111)  # the kernel sends cellbox SIGWINCH
        time.sleep(0.5)
        os.write(fd, b"stty size; echo h''i; exit 5\r")
        out, code = _read_until_exit(fd, pid, timeout=60)
    finally:
        os.close(fd)
    assert code == 5, out
    assert b"33 111" in out and b"hi" in out


def test_tunnel_to_http_server(cli, sandbox_id):
    cli("exec", sandbox_id, "sh", "-c", "mkdir -p /srv && echo tunnelled > /srv/index.html")
    cli("exec", "--detach", "-w", "/srv", sandbox_id, "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1")
    wait = (
        "import socket,time\n"
        "for _ in range(100):\n"
        " try: socket.create_connection(('127.0.0.1',8000),1); break\n"
        " except OSError: time.sleep(0.2)"
    )
    cli("exec", sandbox_id, "python3", "-c", wait)
    port = free_port()
    proc = subprocess.Popen(
        [str(CELLBOX), "tunnel", sandbox_id, "8000", "-l", str(port)],
        env=cli.server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
        assert f"127.0.0.1:{port}" in line, (line, err)
        r = httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=20)
        assert r.status_code == 200 and r.text == "tunnelled\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
