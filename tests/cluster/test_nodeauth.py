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
