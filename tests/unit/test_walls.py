"""The walls' rulesets (network/walls.py) render to scripts nft accepts, and they match
only our own names."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

import pytest

from cellbox.config import load
from cellbox.network import firewall, host, walls


def _settings():
    # A throwaway table name: the dry run (-c) checks syntax and semantics, changes nothing.
    return dataclasses.replace(load(), nft_table="cbtestw")


def test_rules_name_only_our_bridge_and_table():
    s = _settings()
    inet = walls.inet_ruleset(s, firewall.EGRESS_MAP, firewall.REJECT)
    assert f'iifname != "{s.bridge}" accept' in inet  # everything else is left alone
    assert "table inet cbtestw" in inet and "table bridge cbtestw" in walls.bridge_ruleset(s)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"):
        assert net in inet
    assert "198.51.100" not in inet and "203.0.113" not in inet  # the tests' fake internet stays public


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")
def test_nft_accepts_the_walls():
    s = _settings()
    script = host.ruleset(s) + walls.inet_ruleset(s, firewall.EGRESS_MAP, firewall.REJECT) + walls.bridge_ruleset(s)
    res = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
