"""``cellbox ssh`` (an interactive shell on a PTY) and ``cellbox tunnel`` (a local port into a sandbox)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from ._common import api_url_option, client, handle_errors, parse_env

if TYPE_CHECKING:
    from ..sdk import Pty


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return size.lines or 24, size.columns or 80  # a fresh pty may report 0x0


@contextlib.contextmanager
def _raw_mode(fd: int) -> Iterator[None]:
    """Put the local terminal in raw mode (keys go through unchanged) and restore it afterwards."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _pump_output(pty: Pty, done_w: int) -> None:
    try:
        while data := pty.recv():
            os.write(sys.stdout.fileno(), data)
    except Exception:  # noqa: BLE001 - any end of the session ends the command
        pass
    finally:
        os.write(done_w, b"x")


def _interact(pty: Pty, in_fd: int, out_fd: int) -> None:
    """Relay keystrokes to the PTY until the session ends; resize it on SIGWINCH."""
    done_r, done_w = os.pipe()
    winch_r, winch_w = os.pipe()
    os.set_blocking(winch_w, False)
    old_wakeup = signal.set_wakeup_fd(winch_w)
    old_handler = signal.signal(signal.SIGWINCH, lambda *_: None)  # a handler, so the wakeup fd fires
    threading.Thread(target=_pump_output, args=(pty, done_w), daemon=True).start()
    watch = [in_fd, winch_r, done_r]
    try:
        while True:
            ready, _, _ = select.select(watch, [], [])
            if done_r in ready:
                return
            if winch_r in ready:
                os.read(winch_r, 512)
                rows, cols = _terminal_size(out_fd)
                pty.resize(rows, cols)
            if in_fd in ready:
                data = os.read(in_fd, 4096)
                if data:
                    pty.send(data)
                else:  # local end of input: stop reading, wait for the session to end
                    watch.remove(in_fd)
    finally:
        signal.signal(signal.SIGWINCH, old_handler)
        signal.set_wakeup_fd(old_wakeup)
        for fd in (done_r, done_w, winch_r, winch_w):
            os.close(fd)


@click.command("ssh")
@click.argument("sandbox")
@click.option("-s", "--shell", default="/bin/bash", show_default=True, help="Program to run on the terminal.")
@click.option("--shell-arg", multiple=True, help="Argument for the shell (repeatable).")
@click.option("-w", "--workdir", default=None, help="Working directory.")
@click.option("-e", "--env", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@api_url_option
@handle_errors
def ssh(
    sandbox: str,
    shell: str,
    shell_arg: tuple[str, ...],
    workdir: str | None,
    env: tuple[str, ...],
    api_url: str | None,
) -> None:
    """Open an interactive shell in SANDBOX; exit with the shell's exit code."""
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    rows, cols = _terminal_size(out_fd)
    environ = {"TERM": os.environ.get("TERM", "xterm-256color"), **parse_env(env)}
    with client(api_url) as c:
        sbx = c.connect(sandbox)
        pty = sbx.pty(shell, list(shell_arg), env=environ, working_dir=workdir, rows=rows, cols=cols)
        try:
            with _raw_mode(in_fd):
                _interact(pty, in_fd, out_fd)
        finally:
            pty.close()
    code = pty.exit_code
    if code is None:
        click.echo("\r\ncellbox: session ended without an exit status", err=True)
        sys.exit(255)
    sys.exit(code if 0 <= code <= 255 else 255)


@click.command("tunnel")
@click.argument("sandbox")
@click.argument("remote_port", type=int)
@click.option("-l", "--listen-port", "local_port", type=int, default=0, help="Local port [any free port].")
@click.option("--host", "local_host", default="127.0.0.1", show_default=True, help="Local address to listen on.")
@api_url_option
@handle_errors
def tunnel(sandbox: str, remote_port: int, local_port: int, local_host: str, api_url: str | None) -> None:
    """Forward a local port to REMOTE_PORT inside SANDBOX until interrupted."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with client(api_url) as c:
        sbx = c.connect(sandbox)
        with sbx.create_tunnel(remote_port, local_port, local_host) as t:
            click.echo(f"Forwarding {t.local_host}:{t.local_port} -> {sbx.id}:{remote_port} (Ctrl-C to stop)")
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
