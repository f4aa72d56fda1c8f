"""The ``tensorlake`` client's network options against our server (issue 5).

Create with ``allow_out``/``deny_out``/``allow_internet_access``, then
``update_sandbox(network=...)`` with a policy, with an unresolvable name (refused, old
policy kept) and with ``CLEAR_NETWORK_POLICY``. Traffic goes only to the test
"internet" namespace (tests/nettest/internet.py).
"""

from __future__ import annotations

import pytest
from tensorlake.sandbox.models import CLEAR_NETWORK_POLICY, NetworkConfig

from ..nettest.internet import ADDRS, HTTP_PORT, probe_source, tcp_checks, tcp_verdicts

B, C = ADDRS[1], ADDRS[2]


def reach(sbx, *addrs: str) -> dict[str, str]:
    res = sbx.run("python3", ["-c", probe_source(), tcp_checks(*addrs)], timeout=60)
    assert res.exit_code == 0, res
    return tcp_verdicts(res.stdout)


def test_network_options_and_live_update(made, client, server_internet):
    server_internet.set_zone({"api.test.example": [B]})
    sbx = made.create(allow_out=["api.test.example"])
    assert reach(sbx, B, C) == {B: "ok", C: "blocked"}
    res = sbx.run("curl", ["-s", "--max-time", "5", f"http://api.test.example:{HTTP_PORT}/"])
    assert res.stdout == B
    assert client.get(sbx.sandbox_id).network_policy.allow_out == ["api.test.example"]

    client.update_sandbox(sbx.sandbox_id, network=NetworkConfig(deny_out=[B]))
    assert reach(sbx, B, C) == {B: "blocked", C: "ok"}

    with pytest.raises(Exception) as err:
        client.update_sandbox(sbx.sandbox_id, network=NetworkConfig(allow_out=["nosuch.test.example"]))
    assert "nosuch.test.example" in str(err.value)
    assert client.get(sbx.sandbox_id).network_policy.deny_out == [B]
    assert reach(sbx, B, C) == {B: "blocked", C: "ok"}

    client.update_sandbox(sbx.sandbox_id, network=CLEAR_NETWORK_POLICY)
    assert client.get(sbx.sandbox_id).network_policy is None
    assert reach(sbx, B, C) == {B: "ok", C: "ok"}


def test_no_internet(made, server_internet):
    sbx = made.create(allow_internet_access=False)
    assert reach(sbx, B) == {B: "blocked"}
