"""The SDK's egress options: ``Sandbox.create(allow_out=..., deny_out=...)``,
``update_network`` and ``clear_network``. Traffic goes only to the test "internet"."""

from __future__ import annotations

import json

import pytest

from cellbox.config import load
from cellbox.sdk import CellboxError

from ..nettest.internet import ADDRS, ECHO_PORT, Internet, probe_source, resolver_upstream

B, C = ADDRS[1], ADDRS[2]


@pytest.fixture
def internet(tmp_path):
    net = Internet(tmp_path)
    try:
        with resolver_upstream(load().data_dir):
            yield net
    finally:
        net.close()


def reach(sbx, *addrs: str) -> dict[str, str]:
    checks = json.dumps([("tcp", f"{a}:{ECHO_PORT}") for a in addrs])
    res = sbx.run("python3", ["-c", probe_source(), checks])
    assert res.exit_code == 0, res
    return {k.split()[1].split(":")[0]: v.split(":")[0] for k, v in json.loads(res.stdout).items()}


def test_policy_at_create_and_while_running(sandboxes, internet):
    sbx = sandboxes.create(deny_out=[f"{C}/32"])
    assert reach(sbx, B, C) == {B: "ok", C: "blocked"}
    internet.set_zone({"api.test.example": [C]})
    info = sbx.update_network(allow_out=["api.test.example"])
    assert info.raw["network_policy"]["allow_out"] == ["api.test.example"]
    assert reach(sbx, B, C) == {B: "blocked", C: "ok"}
    with pytest.raises(CellboxError, match="nosuch.test.example"):
        sbx.update_network(allow_out=["nosuch.test.example"])
    assert reach(sbx, B, C) == {B: "blocked", C: "ok"}  # the old policy stayed
    sbx.clear_network()
    assert reach(sbx, B, C) == {B: "ok", C: "ok"}
