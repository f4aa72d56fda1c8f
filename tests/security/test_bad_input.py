"""Bad input from a client of the real server gets a clear 4xx naming the problem,
never a 500 (walls issue, hole 9), and oversized bodies and headers are cut off.

Through the real ``cellbox server`` (``tests/api/conftest.py``: its log is checked for
500s at the end of the session) and the proxy in front of a real sandbox's agent.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from ..keys import auth
from ..api.conftest import Api, ServerProcess, server  # noqa: F401 - the fixture, for this module

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def box(server: ServerProcess) -> Iterator[tuple[Api, str]]:  # noqa: F811
    api = Api(server)
    try:
        yield api, api.create({})["sandbox_id"]
    finally:
        api.cleanup()


def _files(server: ServerProcess, sid: str) -> httpx.Client:  # noqa: F811
    return httpx.Client(base_url=f"http://127.0.0.1:{server.proxy_port}", headers={"Host": f"{sid}.local", **auth()}, timeout=60)


@pytest.mark.parametrize("path", ["/tmp/" + "a" * 300, "/tmp/" + "/".join(["b" * 200] * 25)],
                         ids=["300-char-name", "5000-char-path"])
def test_too_long_file_names_are_400(box, server, path):  # noqa: F811
    api, sid = box
    with _files(server, sid) as c:
        answers = {
            "PUT": c.put("/api/v1/files", params={"path": path}, content=b"x"),
            "GET": c.get("/api/v1/files", params={"path": path}),
            "DELETE": c.delete("/api/v1/files", params={"path": path}),
            "LIST": c.get("/api/v1/files/list", params={"path": path}),
        }
    for op, r in answers.items():
        assert r.status_code == 400, (op, r.status_code, r.text)
        assert r.json()["code"] == "NAME_TOO_LONG", (op, r.text)


def test_deleting_a_busy_mount_point_is_409(box, server):  # noqa: F811
    api, sid = box
    with _files(server, sid) as c:
        r = c.delete("/api/v1/files", params={"path": "/dev/shm"})  # a tmpfs mount of the container
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "BUSY"
        # The agent is fine afterwards.
        assert c.get("/api/v1/health").status_code == 200


def test_null_create_body_is_400(server):  # noqa: F811
    api = Api(server)
    try:
        for body in (b"null", b"[]", b"42", b'"text"'):
            r = api.request("POST", "/sandboxes", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (body, r.status_code, r.text)
            assert r.json()["code"] == "INVALID_REQUEST"
    finally:
        api.cleanup()


def test_proxy_to_a_terminated_sandbox_is_410_not_retried_503(server):  # noqa: F811
    api = Api(server)
    try:
        sid = api.create({})["sandbox_id"]
        assert api.delete(sid).status_code == 200
        r = httpx.get(f"http://127.0.0.1:{server.proxy_port}/api/v1/health", headers={"Host": f"{sid}.local", **auth()}, timeout=30)
        # 503 makes the Tensorlake SDK retry (RETRYABLE_STATUS_CODES 429/502/503/504): it never comes back.
        assert r.status_code == 410, r.text
        assert r.json()["code"] == "SANDBOX_TERMINATED"
        r = httpx.get(f"http://127.0.0.1:{server.proxy_port}/api/v1/health",
                      headers={"Host": "nosuchsandboxatall00000.local", **auth()}, timeout=30)
        assert r.status_code == 404 and r.json()["code"] == "SANDBOX_NOT_FOUND"
    finally:
        api.cleanup()


def test_oversized_api_bodies_are_413(server):  # noqa: F811
    big = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    r = httpx.post(f"{server.url}/sandboxes", content=big, headers=auth(), timeout=60)
    assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while streaming
        for _ in range(64):
            yield b"x" * (64 << 10)

    r = httpx.post(f"{server.url}/sandboxes", content=chunks(), headers=auth(), timeout=60)
    assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"


def _raw(port: int, head: bytes) -> bytes:
    """Send ``head`` on a raw socket, return what the server answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close as soon as it has answered
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return out


@pytest.mark.parametrize("where", ["api", "proxy"])
@pytest.mark.parametrize("flood", ["one-huge-header", "many-headers"])
def test_header_flood_is_431(server, where, flood):  # noqa: F811
    port = server.api_port if where == "api" else server.proxy_port
    if flood == "one-huge-header":
        extra = b"X-Flood: " + b"a" * (1 << 20) + b"\r\n"
    else:
        extra = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"b" * 64) for i in range(20000))
    head = b"GET /sandboxes HTTP/1.1\r\nHost: x.local\r\n" + extra + b"\r\n"
    answer = _raw(port, head)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
