"""``cellbox new -N/-A/-D`` and ``cellbox update`` against the shared live server.

Traffic goes only to the test "internet" namespace (tests/nettest/internet.py).
"""

from __future__ import annotations

import json

from ..nettest.internet import ADDRS, probe_source, tcp_checks, tcp_verdicts

B, C = ADDRS[1], ADDRS[2]


def reach(cli, sandbox_id: str, *addrs: str) -> dict[str, str]:
    return tcp_verdicts(cli("exec", sandbox_id, "python3", "-c", probe_source(), tcp_checks(*addrs)).stdout)


def test_create_flags_and_live_update(cli, server_internet):
    server_internet.set_zone({"api.test.example": [C]})
    sid = cli.new("-A", B, "-A", "api.test.example", "-D", C)
    assert reach(cli, sid, B, C) == {B: "ok", C: "blocked"}  # deny beats allow
    described = json.loads(cli("describe", sid, "--json").stdout)["network_policy"]
    assert described == {"allow_internet_access": True, "allow_out": [B, "api.test.example"], "deny_out": [C]}

    assert "no internet" in cli("update", sid, "-N").stdout
    assert reach(cli, sid, B, C) == {B: "blocked", C: "blocked"}
    cli("update", sid, "--clear-network")
    assert reach(cli, sid, B, C) == {B: "ok", C: "ok"}
    assert "Network" in cli("describe", sid).stdout


def test_update_refuses_bad_input(cli, server_internet):
    sid = cli.new("-N")
    bad = cli("update", sid, "-A", "nosuch.test.example", check=False)
    assert bad.returncode != 0 and "nosuch.test.example" in bad.stderr
    bad = cli("update", sid, "-A", "300.1.2.3", check=False)
    assert bad.returncode != 0 and "300.1.2.3" in bad.stderr
    usage = cli("update", sid, check=False)
    assert usage.returncode == 2 and "nothing to update" in usage.stderr
    assert json.loads(cli("describe", sid, "--json").stdout)["network_policy"]["allow_internet_access"] is False
