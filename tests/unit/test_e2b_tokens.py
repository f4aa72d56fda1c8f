"""envd access tokens and E2B routing headers (cellbox/e2b/tokens.py, proxy/routing.py)."""

from __future__ import annotations

import stat

from cellbox.e2b.tokens import TokenKey
from cellbox.proxy import routing


def test_tokens_are_per_sandbox_stable_and_secret(tmp_path):
    keys = TokenKey(tmp_path)
    a, b = keys.token("a" * 21), keys.token("b" * 21)
    assert a != b and len(a) == 64
    assert stat.S_IMODE((tmp_path / "e2b.key").stat().st_mode) == 0o600
    assert TokenKey(tmp_path).token("a" * 21) == a  # survives a restart (and pause/resume)
    assert TokenKey(tmp_path).check("a" * 21, a)
    assert not keys.check("a" * 21, b) and not keys.check("a" * 21, None) and not keys.check("a" * 21, "")
    (tmp_path / "other").mkdir()
    assert TokenKey(tmp_path / "other").token("a" * 21) != a  # another host key: another token


def test_e2b_headers_route_like_tensorlakes():
    sid = "x" * 21
    target = routing.target_of([(b"host", b"localhost:9443"), (b"e2b-sandbox-id", sid.encode()),
                                (b"e2b-sandbox-port", b"49983")])
    assert (target.ref, target.port) == (sid, 49983)
    # Host routing wins, as for Tensorlake's headers: {port}-{id}.local
    target = routing.target_of([(b"host", f"8000-{sid}.local".encode()), (b"e2b-sandbox-id", b"other")])
    assert (target.ref, target.port) == (sid, 8000)
