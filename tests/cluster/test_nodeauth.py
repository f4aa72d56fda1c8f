"""The control plane's token toward a node's proxy, and the cluster key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cellbox.cluster import nodeauth

KEY = bytes(range(32))


def test_a_token_opens_one_ref_and_port_for_a_minute() -> None:
    tok = nodeauth.token(KEY, "abc", 9501, now=1000)
    assert nodeauth.verify(KEY, f"Bearer {tok}".encode(), "abc", 9501, now=1000)
    assert nodeauth.verify(KEY, tok.encode(), "abc", 9501, now=1059)
    assert not nodeauth.verify(KEY, tok.encode(), "abc", 9501, now=1061)  # expired
    assert not nodeauth.verify(KEY, tok.encode(), "abd", 9501, now=1000)  # another sandbox
    assert not nodeauth.verify(KEY, tok.encode(), "abc", 8080, now=1000)  # another port
    assert not nodeauth.verify(bytes(32), tok.encode(), "abc", 9501, now=1000)  # another cluster's key
    expiry, mac = tok[len(nodeauth.PREFIX):].split("_")
    later = f"{nodeauth.PREFIX}{int(expiry) + 3600}_{mac}"  # pushing the expiry breaks the MAC
    assert not nodeauth.verify(KEY, later.encode(), "abc", 9501, now=1000)
    for junk in (b"", None, b"Bearer ", b"Bearer cbx_node_x_y", b"cbx_0123_" + b"0" * 64, "\xff".encode("latin-1")):
        assert not nodeauth.verify(KEY, junk, "abc", 9501, now=1000)
    assert tok.startswith("cbx_")  # the node's proxy strips it like an API key before the sandbox


def test_the_key_file_is_made_once_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cluster.key"
    key = nodeauth.load_key(path)
    assert len(key) == 32 and nodeauth.load_key(path) == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.write_text("00" * 8)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        nodeauth.load_key(path)


def test_a_read_token_opens_one_sandbox_of_one_project_on_one_node() -> None:
    tok = nodeauth.read_token(KEY, "node-1", "abc", "p1", now=1000)
    assert nodeauth.verify_read(KEY, f"Bearer {tok}", "node-1", "abc", "p1", now=1000)
    assert not nodeauth.verify_read(KEY, tok, "node-1", "abc", "p1", now=1061)  # expired
    for node, local, project in [("node-2", "abc", "p1"), ("node-1", "abd", "p1"), ("node-1", "abc", "p2")]:
        assert not nodeauth.verify_read(KEY, tok, node, local, project, now=1000)
    assert not nodeauth.verify_read(bytes(32), tok, "node-1", "abc", "p1", now=1000)
    data_path = nodeauth.token(KEY, "abc", 9501, now=1000)  # a data-path token is not a read token
    assert not nodeauth.verify_read(KEY, data_path, "node-1", "abc", "p1", now=1000)
    for junk in ("", None, "Bearer ", "cbx_nread_x_y", "cbx_nread_99999999999_" + "0" * 64):
        assert not nodeauth.verify_read(KEY, junk, "node-1", "abc", "p1", now=1000)


@pytest.mark.parametrize("answer", [
    {}, {"lines": "x"}, {"lines": [[1, "a", None, None]]}, {"lines": [["1", "a", None, None, 3]]},
    {"lines": [[1, 2, None, None, 3]]}, {"lines": [[1, "a", "7", None, 3]]}, {"lines": [[1, "a", None, 5, 3]]},
    {"lines": [[1, "a", None, None, 9]]}, {"lines": [[1, "a" * ((1 << 20) + 1), None, None, 3]]},
])
def test_a_nodes_logs_answer_is_parsed_strictly(answer: dict) -> None:
    """What a node sends back is the tenant's output: a wrong shape is a 503, not a 500."""
    from cellbox.cluster import node_reads

    with pytest.raises(node_reads.NodeUnavailable) as exc:
        node_reads._parse_lines(answer)
    assert exc.value.status == 503


def test_a_nodes_refusal_is_relayed_bounded() -> None:
    from cellbox.cluster import node_reads

    err = node_reads._relayed(404, {"code": "SANDBOX_NOT_FOUND", "message": "m" * 9999}, "node-1")
    assert (err.status, err.code, len(err.message)) == (404, "SANDBOX_NOT_FOUND", 500)
    assert node_reads._relayed(401, {"code": "UNAUTHORIZED", "message": "x"}, "node-1").status == 503
    assert node_reads._relayed(500, {}, "node-1").status == 503
    assert node_reads._relayed(409, {"code": 5, "message": "x"}, "node-1").status == 503
    lines = node_reads._parse_lines({"lines": [[1, "a", 7, "sh", 3], [2, "b", None, None, 5]]})
    assert [(ln.body, ln.pid, ln.level) for ln in lines] == [("a", 7, 3), ("b", None, 5)]
