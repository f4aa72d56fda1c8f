"""The MCP server's pure parts: path checks, the output cap, bearer parsing, the bind rule."""

from __future__ import annotations

import subprocess

import pytest

from cellbox.errors import InvalidRequest
from cellbox.mcp.backend import bearer_key
from cellbox.mcp.exec_tools import OutputCap, _OutputFull
from cellbox.mcp.server import HttpOptions, check_listen
from cellbox.mcp.validate import check_path, check_ref
from cellbox.sdk import OutputLine

from .harness import CELLBOX


@pytest.mark.parametrize("bad", ["rel/x", "/a/../b", "/..", "/a\x00b", "../etc"])
def test_check_path_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        check_path(bad)


def test_check_path_normalizes() -> None:
    assert check_path("/work//a/./b/") == "/work/a/b"
    assert check_path("/") == "/"
    assert check_ref("abc-1") == "abc-1"
    with pytest.raises(ValueError):
        check_ref("../x")


def test_output_cap_keeps_a_prefix_within_the_limit() -> None:
    cap = OutputCap(10)
    cap(OutputLine("abcd", "stdout"))  # 5 bytes with its newline
    with pytest.raises(_OutputFull):
        cap(OutputLine("é" * 10, "stderr"))  # 20 bytes: cut to what fits, on a character boundary
    assert cap.truncated and cap.text("stdout") == "abcd" and cap.text("stderr") == "éé"
    assert len((cap.text("stdout") + "\n" + cap.text("stderr")).encode()) <= 10


def test_bearer_key() -> None:
    assert bearer_key("Bearer cbx_1") == "cbx_1"
    assert bearer_key("bearer   cbx_1 ") == "cbx_1"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer "):
        assert bearer_key(bad) is None


def test_network_bind_needs_tls_or_insecure() -> None:
    check_listen(HttpOptions(host="127.0.0.1"))
    check_listen(HttpOptions(host="0.0.0.0", insecure=True))
    with pytest.raises(InvalidRequest, match="TLS"):
        check_listen(HttpOptions(host="0.0.0.0"))
    with pytest.raises(InvalidRequest, match="together"):
        check_listen(HttpOptions(tls_cert="/x"))
    r = subprocess.run([str(CELLBOX), "mcp", "--transport", "http", "--host", "0.0.0.0"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "TLS" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([str(CELLBOX), "mcp", "--transport", "http", "--api-key", "k"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "own key" in r.stderr


class _Ctx:
    """What ``Backend.key_for`` reads of an MCP request context: its HTTP headers."""

    def __init__(self, headers: dict[str, str] | None) -> None:
        self.headers = headers


def test_http_backend_never_falls_back_to_its_own_key() -> None:
    from mcp.server.mcpserver.exceptions import ToolError

    from cellbox.mcp.backend import Backend

    http = Backend("http://127.0.0.1:1", "server-own-key", keys_from_requests=True)
    assert http.key_for(_Ctx({"authorization": "Bearer caller-key"})) == "caller-key"
    for headers in (None, {}, {"authorization": "Basic eDp5"}):
        with pytest.raises(ToolError, match="Bearer"):
            http.key_for(_Ctx(headers))
    stdio = Backend("http://127.0.0.1:1", "own-key", keys_from_requests=False)
    assert stdio.key_for(_Ctx({"authorization": "Bearer someone-else"})) == "own-key"  # stdio has one caller
