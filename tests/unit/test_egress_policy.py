"""Egress policy parsing and the nftables transaction it becomes (no root needed).

The rendered transaction is also checked by nft itself (``nft -c``, a dry run that
changes nothing) when nft and root are available.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess

import pytest

from cellbox.errors import InvalidRequest
from cellbox.network import firewall
from cellbox.network.policy import from_wire, name_matches, parse


def test_entries_are_sorted_into_addresses_cidrs_and_names():
    pol = parse(allow_out=["192.0.2.7", "10.0.0.0/8", "2001:db8::/32", "Example.COM.", "api.example.com:443",
                           "[2001:db8::1]:443", "192.0.2.9:80", "*.svc.example.org"])
    assert [str(n) for n in pol.allow.nets4] == ["192.0.2.7/32", "10.0.0.0/8", "192.0.2.9/32"]
    assert [str(n) for n in pol.allow.nets6] == ["2001:db8::/32", "2001:db8::1/128"]
    assert pol.allow.names == ("example.com", "api.example.com", "*.svc.example.org")
    assert pol.default_deny and not pol.unrestricted
    assert pol.to_wire()["allow_out"][3] == "Example.COM."  # echoed as sent


@pytest.mark.parametrize("bad", ["", "300.1.2.3", "10.0.0.0/33", "exa mple.com", "-bad.example", "*.com",
                                 "host:99999", "a..b", "x" * 64 + ".com"])
def test_bad_entries_are_refused_by_name(bad):
    with pytest.raises(InvalidRequest, match="network.deny_out"):
        parse(deny_out=[bad])


def test_semantics_flags():
    assert parse().unrestricted
    assert parse(allow_internet_access=False).default_deny
    deny_only = parse(deny_out=["192.0.2.1"])
    assert not deny_only.default_deny and not deny_only.unrestricted
    assert from_wire(None) is None and from_wire({"allow_internet_access": True}) is None
    assert from_wire({"allow_internet_access": False}).default_deny


def test_wildcards_match_below_the_apex_only():
    assert name_matches("*.example.com", "a.b.example.com")
    assert not name_matches("*.example.com", "example.com")
    assert not name_matches("*.example.com", "badexample.com")
    assert name_matches("example.com", "EXAMPLE.com.")


def _script(**kw):
    pol = parse(**kw)
    resolved = {"api.example.com": [(ipaddress.ip_address("192.0.2.50"), 30)]}
    return firewall.apply_script("cbtest", "abc", "10.210.0.9", pol, resolved, "10.210.0.1")


def test_rendered_rules_put_deny_before_allow_and_end_default_deny():
    script = _script(allow_out=["api.example.com", "198.51.100.0/24"], deny_out=["198.51.100.7"])
    rules = [line for line in script.splitlines() if line.startswith("add rule")]
    assert all("reject" in r for r in rules[:4]) and all("accept" in r for r in rules[4:8])
    assert rules[-1].endswith(firewall.REJECT) and len(rules) == 9
    assert "add element inet cbtest sbx-abc-an4 { 192.0.2.50 timeout 45s }" in script
    assert "add element inet cbtest dns_forced { 10.210.0.9 }" in script
    assert "add element inet cbtest dns_blocked" in script and "delete element inet cbtest dns_blocked" in script


def test_no_internet_blocks_dns_unless_the_resolver_is_listed():
    blocked = _script(allow_internet_access=False)
    assert "add element inet cbtest dns_blocked { 10.210.0.9 }\n" in blocked
    assert "delete element inet cbtest dns_blocked" not in blocked
    listed = _script(allow_internet_access=False, allow_out=["10.210.0.1"])
    assert "delete element inet cbtest dns_blocked { 10.210.0.9 }" in listed


def test_deny_only_policy_has_no_final_reject():
    rules = [line for line in _script(deny_out=["192.0.2.1"]).splitlines() if line.startswith("add rule")]
    assert len(rules) == 4 and all("reject" in r for r in rules)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")
def test_nft_accepts_the_rendered_transactions():
    from cellbox.config import load
    from cellbox.network import host

    settings = load()
    # A throwaway table name: the dry run (-c) checks syntax and semantics, changes nothing.
    base = host.ruleset(settings).replace(f"inet {settings.nft_table}", "inet cbtest")
    for script in (_script(allow_out=["api.example.com", "2001:db8::/32"], deny_out=["198.51.100.7"]),
                   _script(allow_internet_access=False),
                   firewall.remove_script("cbtest", "abc", "10.210.0.9")):
        res = subprocess.run(["nft", "-c", "-f", "-"], input=base + script, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
