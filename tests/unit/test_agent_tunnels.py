"""In-sandbox agent: TCP tunnels (``/api/v1/tunnels/tcp?port=N``) over WebSocket.

The agent runs on the host in these tests, so "127.0.0.1 inside the sandbox"
is the host's loopback: the upstream servers are threads of this test process.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Iterator

import httpx
import pytest

from .test_agent_pty import AgentProcess, WSClient, ws_reject

pytestmark = pytest.mark.timeout(60)


class Upstream:
    """A threaded TCP server on 127.0.0.1: echo, or greet-and-close."""

    def __init__(self, mode: str = "echo") -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            if self.mode == "greet":
                conn.sendall(b"hello from upstream")
                return
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with AgentProcess(root=str(tmp_path_factory.mktemp("root"))) as proc:
        yield proc


@pytest.fixture(scope="module")
def echo() -> Iterator[Upstream]:
    server = Upstream("echo")
    yield server
    server.close()


def tunnel(agent: AgentProcess, port: int) -> WSClient:
    return WSClient(agent.port, f"/api/v1/tunnels/tcp?port={port}")


def test_one_mib_round_trip(agent: AgentProcess, echo: Upstream) -> None:
    payload = os.urandom(1 << 20)
    ws = tunnel(agent, echo.port)

    def sender() -> None:
        for off in range(0, len(payload), 50_000):
            ws.send(payload[off : off + 50_000])

    thread = threading.Thread(target=sender)
    thread.start()
    received = bytearray()
    while len(received) < len(payload):
        msg = ws.recv()
        assert isinstance(msg, bytes), (msg, ws.close_code)
        received += msg
    thread.join()
    assert bytes(received) == payload
    assert ws.frames_max <= 64 * 1024
    ws.close()
    # no resolver/executor thread appeared: the agent forks and must stay single-threaded
    assert os.listdir(f"/proc/{agent.agent_pid}/task") == [str(agent.agent_pid)]


def test_each_websocket_is_its_own_connection(agent: AgentProcess, echo: Upstream) -> None:
    before = echo.connections
    a, b = tunnel(agent, echo.port), tunnel(agent, echo.port)
    a.send(b"from-a")
    b.send(b"from-b")
    assert a.recv() == b"from-a" and b.recv() == b"from-b"
    assert echo.connections == before + 2
    a.close()
    b.send(b"still-there")
    assert b.recv() == b"still-there"
    b.close()


def test_upstream_close_closes_the_websocket(agent: AgentProcess) -> None:
    server = Upstream("greet")
    try:
        ws = tunnel(agent, server.port)
        data = b""
        while True:
            msg = ws.recv()
            if msg is None:
                break
            assert isinstance(msg, bytes)
            data += msg
        assert data == b"hello from upstream" and ws.close_code == 1000
    finally:
        server.close()


def test_text_frames_are_rejected(agent: AgentProcess, echo: Upstream) -> None:
    ws = tunnel(agent, echo.port)
    ws.send("text is not allowed")
    assert ws.recv() is None and ws.close_code == 1003


def test_nothing_listening_is_502(agent: AgentProcess) -> None:
    rejected = ws_reject(agent.port, f"/api/v1/tunnels/tcp?port={free_port()}")
    assert rejected.status == 502 and rejected.json()["code"] == "CONNECTION_FAILED"


def test_bad_port_is_400(agent: AgentProcess) -> None:
    for query in ["port=0", "port=65536", "port=abc", "port=-1", "", "port="]:
        rejected = ws_reject(agent.port, f"/api/v1/tunnels/tcp?{query}")
        assert rejected.status == 400 and rejected.json()["code"] == "INVALID_PORT", query


def test_plain_http_request_is_426(agent: AgentProcess, echo: Upstream) -> None:
    r = httpx.get(f"{agent.url}/api/v1/tunnels/tcp", params={"port": echo.port})
    assert r.status_code == 426 and r.json()["code"] == "UPGRADE_REQUIRED"
    assert httpx.get(f"{agent.url}/api/v1/health").status_code == 200
