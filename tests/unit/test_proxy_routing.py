"""Sandbox proxy, the I/O-free parts: target selection, header rewriting, error mapping."""

from __future__ import annotations

import json

import pytest

from cellbox.errors import CellboxError, Conflict, InvalidRequest, NotFound
from cellbox.proxy import errors, headers
from cellbox.proxy.errors import ProxyError
from cellbox.proxy.routing import AGENT_PORT, Target, target_of


def h(**kw: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in kw.items()]


@pytest.mark.parametrize(
    ("hdrs", "expected"),
    [
        (h(host="sbx1.local"), Target("sbx1", AGENT_PORT)),
        (h(host="SBX1.Local:9443"), Target("sbx1", AGENT_PORT)),
        (h(host="my-box.local"), Target("my-box", AGENT_PORT)),
        (h(host="8080-my-box.local"), Target("my-box", 8080)),
        (h(host="8080-0123456789abcdefghijk.local:9443"), Target("0123456789abcdefghijk", 8080)),
        # an ID may start with digits; without a dash it is never taken for a port
        (h(host="0123456789abcdefghijk.local"), Target("0123456789abcdefghijk", AGENT_PORT)),
        # .local wins over the header; the header is used with any other host
        (h(host="a.local", x_tensorlake_sandbox_id="b"), Target("a", AGENT_PORT)),
        (h(host="localhost:9443", x_tensorlake_sandbox_id="b"), Target("b", AGENT_PORT)),
        (h(host="[::1]:9443", x_tensorlake_sandbox_id="b", x_tensorlake_sandbox_port="3000"), Target("b", 3000)),
        (h(host="sandbox.example.com", x_tensorlake_sandbox_id=" b "), Target("b", AGENT_PORT)),
    ],
)
def test_target_of(hdrs: list[tuple[bytes, bytes]], expected: Target) -> None:
    assert target_of(hdrs) == expected


@pytest.mark.parametrize(
    ("hdrs", "status", "code"),
    [
        (h(host="localhost:9443"), 400, "MISSING_SANDBOX_ID"),
        (h(host=".local"), 400, "MISSING_SANDBOX_ID"),
        (h(host="localhost", x_tensorlake_sandbox_id=""), 400, "MISSING_SANDBOX_ID"),
        (h(host="x", x_tensorlake_sandbox_id="b", x_tensorlake_sandbox_port="http"), 400, "INVALID_SANDBOX_PORT"),
        (h(host="x", x_tensorlake_sandbox_id="b", x_tensorlake_sandbox_port="70000"), 400, "INVALID_SANDBOX_PORT"),
        (h(host="0-box.local"), 400, "INVALID_SANDBOX_PORT"),
    ],
)
def test_target_of_rejects(hdrs: list[tuple[bytes, bytes]], status: int, code: str) -> None:
    with pytest.raises(ProxyError) as info:
        target_of(hdrs)
    assert (info.value.status, info.value.code) == (status, code)


def test_upstream_request_strips_hop_by_hop_and_forwards() -> None:
    given = [
        (b"host", b"sbx.local"),
        (b"authorization", b"Bearer k"),
        (b"connection", b"keep-alive, x-secret"),
        (b"keep-alive", b"timeout=5"),
        (b"x-secret", b"1"),
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),  # not named by Connection: no upgrade
        (b"proxy-authorization", b"Basic x"),
        (b"transfer-encoding", b"chunked"),
        (b"x-forwarded-for", b"10.0.0.1"),
    ]
    out = headers.upstream_request(given, "127.0.0.1", keep_alive=False)
    assert out == [
        (b"host", b"sbx.local"),
        (b"authorization", b"Bearer k"),
        (b"transfer-encoding", b"chunked"),
        (b"connection", b"close"),
        (b"x-forwarded-for", b"10.0.0.1, 127.0.0.1"),
    ]


def test_upstream_request_keeps_upgrade_handshake() -> None:
    given = [(b"host", b"h"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket"), (b"sec-websocket-key", b"k")]
    out = headers.upstream_request(given, "::1", keep_alive=False)
    assert (b"connection", b"upgrade") in out and (b"upgrade", b"websocket") in out
    assert (b"sec-websocket-key", b"k") in out and (b"x-forwarded-for", b"::1") in out


def test_upstream_request_adds_host_for_http10() -> None:
    assert (b"host", b"sandbox") in headers.upstream_request([(b"x-tensorlake-sandbox-id", b"a")], "1.2.3.4", True)


def test_client_response_keeps_length_drops_framing() -> None:
    given = [(b"content-length", b"5"), (b"connection", b"close"), (b"transfer-encoding", b"chunked"), (b"x-a", b"1")]
    assert headers.client_response(given) == [(b"content-length", b"5"), (b"x-a", b"1")]
    switching = headers.client_response([(b"upgrade", b"websocket"), (b"connection", b"Upgrade"), (b"sec-websocket-accept", b"x")], True)
    assert switching == [(b"sec-websocket-accept", b"x"), (b"connection", b"upgrade"), (b"upgrade", b"websocket")]


@pytest.mark.parametrize(
    ("err", "status", "code"),
    [
        (NotFound("no such sandbox", code="SANDBOX_NOT_FOUND"), 404, "SANDBOX_NOT_FOUND"),
        (Conflict("suspended", code="SANDBOX_NOT_RUNNING"), 503, "SANDBOX_NOT_RUNNING"),
        (Conflict("port 8080 is not exposed", code="PORT_NOT_EXPOSED"), 403, "PORT_NOT_EXPOSED"),
        (CellboxError("not exposed", code="PORT_NOT_EXPOSED"), 403, "PORT_NOT_EXPOSED"),
        (InvalidRequest("bad name"), 400, "INVALID_REQUEST"),
        (CellboxError("boom"), 500, "INTERNAL"),
    ],
)
def test_cellbox_errors_map_to_answers(err: CellboxError, status: int, code: str) -> None:
    mapped = errors.from_cellbox(err)
    assert (mapped.status, mapped.code) == (status, code)
    assert json.loads(mapped.body()) == {"error": err.message, "code": code}
