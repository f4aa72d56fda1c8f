"""The SDK's egress options: ``Sandbox.create(allow_out=..., deny_out=...)``,
``update_network`` and ``clear_network``. Traffic goes only to the test "internet"."""

from __future__ import annotations

import pytest

from cellbox.sdk import CellboxError

from ..nettest.internet import ADDRS, probe_source, tcp_checks, tcp_verdicts

B, C = ADDRS[1], ADDRS[2]


def reach(sbx, *addrs: str) -> dict[str, str]:
    res = sbx.run("python3", ["-c", probe_source(), tcp_checks(*addrs)])
    assert res.exit_code == 0, res
    return tcp_verdicts(res.stdout)


def test_policy_at_create_and_while_running(sandboxes, server_internet):
    sbx = sandboxes.create(deny_out=[f"{C}/32"])
    assert reach(sbx, B, C) == {B: "ok", C: "blocked"}
    server_internet.set_zone({"api.test.example": [C]})
    info = sbx.update_network(allow_out=["api.test.example"])
    assert info.raw["network_policy"]["allow_out"] == ["api.test.example"]
    assert reach(sbx, B, C) == {B: "blocked", C: "ok"}
    with pytest.raises(CellboxError, match="nosuch.test.example"):
        sbx.update_network(allow_out=["nosuch.test.example"])
    assert reach(sbx, B, C) == {B: "blocked", C: "ok"}  # the old policy stayed
    sbx.clear_network()
    assert reach(sbx, B, C) == {B: "ok", C: "ok"}
