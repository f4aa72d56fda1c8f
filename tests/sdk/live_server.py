"""A real ``cellbox server`` on free ports, shared by tests/sdk and tests/cli.

Both directories' session fixtures call :func:`acquire`; the first starts the server
(``.venv/bin/cellbox server --api-port P --proxy-port Q``) and the last
:func:`release` stops it with SIGTERM, by PID. Every test deletes what it made; the
:class:`Tracker` makes that a finalizer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from ..keys import auth

ROOT = Path(__file__).resolve().parents[2]
CELLBOX = ROOT / ".venv" / "bin" / "cellbox"
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    api_url: str
    proxy_port: int
    proc: subprocess.Popen[bytes]
    log_path: str
    users: int = 0

    def log_tail(self, n: int = 4000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-n:]

    def env(self) -> dict[str, str]:
        """Environment for CLI subprocesses talking to this server."""
        return {**os.environ, "CELLBOX_API_URL": self.api_url}


_server: LiveServer | None = None


def _start() -> LiveServer:
    if os.geteuid() != 0:
        pytest.skip("needs root (the server runs sandboxes)")
    if not CELLBOX.exists():
        pytest.skip(f"{CELLBOX} missing (run scripts/setup.sh)")
    api_port, proxy_port = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix="cellbox-test-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [str(CELLBOX), "server", "--api-port", str(api_port), "--proxy-port", str(proxy_port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(f"http://127.0.0.1:{api_port}", proxy_port, proc, log.name)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"cellbox server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.api_url + "/sandboxes", timeout=2, headers=auth()).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    _stop(server)
    pytest.fail(f"cellbox server not answering after {START_TIMEOUT:g}s:\n{server.log_tail()}")


def _stop(server: LiveServer) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)
    if server.proc.returncode not in (0, -signal.SIGTERM):
        sys.stderr.write(f"cellbox server exited with {server.proc.returncode}:\n{server.log_tail()}\n")


def acquire() -> LiveServer:
    global _server
    if _server is None:
        _server = _start()
    _server.users += 1
    return _server


def release() -> None:
    global _server
    if _server is None:
        return
    _server.users -= 1
    if _server.users <= 0:
        _stop(_server)
        _server = None


@dataclass
class Tracker:
    """Sandbox IDs a test made; :meth:`cleanup` deletes them all, whatever happened.

    A sandbox made with another project's key is deleted through that project's
    namespaced path: the admin key's flat paths act on its own project, where the
    sandbox is a 404 (which would look like "already gone" and leak it)."""

    api_url: str
    ids: list[str] = field(default_factory=list)
    namespaces: dict[str, str] = field(default_factory=dict)

    def add(self, sandbox_id: str, namespace: str | None = None) -> str:
        self.ids.append(sandbox_id)
        if namespace is not None:
            self.namespaces[sandbox_id] = namespace
        return sandbox_id

    def cleanup(self) -> None:
        errors = []
        for sid in self.ids:
            ns = self.namespaces.get(sid)
            url = f"{self.api_url}/v1/namespaces/{ns}/sandboxes/{sid}" if ns else f"{self.api_url}/sandboxes/{sid}"
            try:
                r = httpx.delete(url, timeout=60, headers=auth())
                if r.status_code >= 400 and r.status_code != 404:
                    errors.append(f"{sid}: {r.status_code} {r.text}")
            except httpx.HTTPError as exc:
                errors.append(f"{sid}: {exc}")
        self.ids.clear()
        assert not errors, f"could not delete sandboxes: {errors}"


# The two fixtures every suite on the shared server uses; conftests import them
# (``from ..sdk.live_server import live_server, tracker``) rather than each writing them.
@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    server = acquire()
    try:
        yield server
    finally:
        release()


@pytest.fixture
def tracker(live_server: LiveServer) -> Iterator[Tracker]:  # noqa: F811 (the fixture above)
    t = Tracker(live_server.api_url)
    try:
        yield t
    finally:
        t.cleanup()
