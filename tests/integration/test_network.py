"""Outbound network: NAT to an outside host, and a resolver that works.

The "outside" is a namespace this test builds (tests/nettest/internet.py); no packet
leaves this machine.
"""

from __future__ import annotations

import pytest

from ..nettest.internet import ADDRS, HTTP_PORT, ROUTER

pytestmark = pytest.mark.root


def test_outbound_traffic_is_natted(sandboxes, internet):
    rec = sandboxes.create()
    res = sandboxes.sh(rec, f"curl -s --max-time 5 http://{ADDRS[1]}:{HTTP_PORT}/")
    assert res["exit_code"] == 0 and res["out"] == ADDRS[1], res
    # The outside host sees the host's router address, not the sandbox's private one.
    log = sandboxes.sh(rec, "ip -4 -o addr show eth0")["out"]
    assert rec.ip in log


def test_resolver_works_through_our_forwarder(sandboxes, internet, settings):
    internet.set_zone({"svc.test.example": [ADDRS[2]]})
    rec = sandboxes.create()
    assert sandboxes.sh(rec, "cat /etc/resolv.conf")["out"].startswith(f"nameserver {settings.gateway}")
    res = sandboxes.sh(rec, f"curl -s --max-time 5 http://svc.test.example:{HTTP_PORT}/")
    assert res["exit_code"] == 0 and res["out"] == ADDRS[2], res
    res = sandboxes.run(rec, "python3", "-c", "import socket;print(socket.gethostbyname('svc.test.example'))")
    assert res["out"] == ADDRS[2]
    assert sandboxes.sh(rec, "getent hosts nosuch.test.example || echo nxdomain")["out"] == "nxdomain"
    assert ROUTER != settings.gateway
