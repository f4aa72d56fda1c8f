"""Fixtures for the MCP tests: the shared live cellbox server, a ``cellbox mcp
--transport http`` in front of it, and a member key of a second project."""

from __future__ import annotations

import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from cellbox.sdk import SandboxClient

from ..sdk.live_server import CELLBOX, LiveServer, free_port
from ..sdk.live_server import live_server, tracker  # noqa: F401 (fixtures)


@dataclass
class McpHttp:
    url: str
    proc: subprocess.Popen[bytes]
    log: str


@pytest.fixture(scope="session")
def mcp_http(live_server: LiveServer) -> Iterator[McpHttp]:
    """``cellbox mcp --transport http`` on a free loopback port, stopped by PID."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="cellbox-mcp-http-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [str(CELLBOX), "mcp", "--transport", "http", "--port", str(port), "--api-url", live_server.api_url],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    server = McpHttp(f"http://127.0.0.1:{port}/mcp", proc, log.name)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, open(log.name).read()[-3000:]
            try:
                httpx.get(server.url, timeout=2)  # any answer (401) means it listens
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "cellbox mcp --transport http did not start"
                time.sleep(0.2)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class ProjectKey:
    project: str
    key: str
    key_id: str


@pytest.fixture(scope="session")
def other_project(live_server: LiveServer) -> Iterator[ProjectKey]:
    """A member key of a project of its own, revoked at the end."""
    project = f"mcp-other-{secrets.token_hex(3)}"
    with SandboxClient(api_url=live_server.api_url) as admin:
        made = admin.create_key(project=project, role="member", expires="1d", name="mcp-tests")
        try:
            yield ProjectKey(project, made["key"], made["id"])
        finally:
            admin.revoke_key(made["id"])
