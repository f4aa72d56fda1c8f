"""Attacks on the sandbox proxy's HTTP handling, made over raw sockets to the real server.

A client that can reach the proxy may send anything: two ``Host`` headers naming two
sandboxes, an absolute-form request target naming another sandbox than ``Host``, a
request whose framing is ambiguous (``Content-Length`` and ``Transfer-Encoding``
together: the classic smuggling pair), several requests pipelined on one kept-alive
connection. Each must be answered for exactly one sandbox, decided once, or refused
with a 4xx; a smuggled request must never reach an agent as a request of its own.
Each sandbox here writes its own ID into a file so the test can see, from the answer,
which agent served it.
"""

from __future__ import annotations

import socket

import pytest

from ..keys import admin_key, auth

pytestmark = pytest.mark.root


def _auth() -> str:
    """The header line of the suite's admin key: every proxy request needs a key."""
    return f"Authorization: Bearer {admin_key()}\r\n"


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` to the proxy and read until it closes the connection (or times out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def _mark(api, server, sid: str) -> None:
    """Write the sandbox's own ID into /tmp/whoami through the proxy (normal use)."""
    import httpx

    r = httpx.put(f"http://127.0.0.1:{server.proxy_port}/api/v1/files", params={"path": "/tmp/whoami"},
                  content=sid.encode(), headers={"Host": f"{sid}.local", **auth()}, timeout=30)
    assert r.status_code in (200, 204), r.text


@pytest.fixture
def two(api, server):
    a = api.create({})["sandbox_id"]
    b = api.create({})["sandbox_id"]
    api.wait_status(a, "running")
    api.wait_status(b, "running")
    _mark(api, server, a)
    _mark(api, server, b)
    return a, b


def _get_whoami(host_lines: str) -> bytes:
    return (f"GET /api/v1/files?path=/tmp/whoami HTTP/1.1\r\n{host_lines}{_auth()}Connection: close\r\n\r\n").encode()


def test_two_host_headers_are_refused(server, two):
    a, b = two
    out = _raw(server.proxy_port, _get_whoami(f"Host: {a}.local\r\nHost: {b}.local\r\n"))
    assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert a.encode() not in out.split(b"\r\n\r\n", 1)[-1] and b.encode() not in out.split(b"\r\n\r\n", 1)[-1]


def test_absolute_form_target_cannot_name_another_sandbox(server, two):
    a, b = two
    req = (f"GET http://{b}.local/api/v1/files?path=/tmp/whoami HTTP/1.1\r\nHost: {a}.local\r\n{_auth()}"
           "Connection: close\r\n\r\n").encode()
    out = _raw(server.proxy_port, req)
    # We are not a forward proxy: an absolute-form target is refused, never routed.
    assert out.startswith(b"HTTP/1.1 400"), out[:300]
    assert b.encode() not in out.split(b"\r\n\r\n", 1)[-1]


def test_host_header_beats_sandbox_id_header_consistently(server, two):
    a, b = two
    out = _raw(server.proxy_port, _get_whoami(f"Host: {a}.local\r\nX-Tensorlake-Sandbox-Id: {b}\r\n"))
    assert out.startswith(b"HTTP/1.1 200"), out[:300]
    assert out.endswith(a.encode())


def test_content_length_with_transfer_encoding_is_refused(server, two):
    a, b = two
    smuggled = f"GET /api/v1/files?path=/tmp/whoami HTTP/1.1\r\nHost: {b}.local\r\n\r\n"
    body = f"0\r\n\r\n{smuggled}"
    req = (f"POST /api/v1/processes/x/stdin HTTP/1.1\r\nHost: {a}.local\r\n{_auth()}Content-Length: {len(body)}\r\n"
           f"Transfer-Encoding: chunked\r\n\r\n{body}").encode()
    out = _raw(server.proxy_port, req)
    assert out.startswith(b"HTTP/1.1 400"), out[:300]
    assert out.count(b"HTTP/1.1 ") == 1, out  # the tail was not served as a second request
    assert b.encode() not in out


def test_pipelined_requests_are_each_routed_on_their_own(server, two):
    a, b = two
    first = f"GET /api/v1/files?path=/tmp/whoami HTTP/1.1\r\nHost: {a}.local\r\n{_auth()}\r\n"
    second = f"GET /api/v1/files?path=/tmp/whoami HTTP/1.1\r\nHost: {b}.local\r\n{_auth()}Connection: close\r\n\r\n"
    out = _raw(server.proxy_port, (first + second).encode())
    answers = out.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2, out
    assert answers[0].startswith(b"200") and answers[0].endswith(a.encode()), answers[0]
    assert answers[1].startswith(b"200") and answers[1].endswith(b.encode()), answers[1]


def test_body_that_looks_like_a_request_stays_a_body(server, two):
    a, b = two
    inner = f"GET /api/v1/files?path=/tmp/whoami HTTP/1.1\r\nHost: {b}.local\r\n\r\n"
    req = (f"PUT /api/v1/files?path=/tmp/body HTTP/1.1\r\nHost: {a}.local\r\n{_auth()}Content-Length: {len(inner)}\r\n"
           f"\r\n{inner}"
           f"GET /api/v1/files?path=/tmp/body HTTP/1.1\r\nHost: {a}.local\r\n{_auth()}Connection: close\r\n\r\n").encode()
    out = _raw(server.proxy_port, req)
    answers = out.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2, out
    assert answers[1].startswith(b"200") and answers[1].endswith(inner.encode()), answers[1]
    assert b.encode() not in answers[0] + answers[1].replace(inner.encode(), b"")
