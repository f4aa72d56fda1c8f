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


def test_sandbox_reaches_the_host_while_bridge_ports_come_and_go(sandboxes, settings):
    """Regression: ``/run`` through the proxy sometimes got no answer under load.

    A Linux bridge without an address of its own takes the lowest MAC of its ports and
    changes it as ports come and go (every sandbox create and destroy). A sandbox that
    had resolved the gateway to a port that was then deleted sent its answers nowhere:
    the agent ran the command, wrote its response and retransmitted it, the host never
    received it. This replays that sequence deterministically with a port of lower MAC
    than any other: it joins the bridge, the sandbox resolves the gateway, it leaves.
    """
    import os
    import subprocess
    from pathlib import Path

    from cellbox.network.host import bridge_mac

    sysfs = Path(f"/sys/class/net/{settings.bridge}")
    assert (sysfs / "address").read_text().strip() == bridge_mac(settings)
    rec = sandboxes.create()
    ns = f"cb-{rec.id}"
    port = f"ctmac{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", port, "address", "02:00:00:00:00:01", "type", "veth",
                    "peer", "name", port + "p"], check=True)
    try:
        subprocess.run(["ip", "link", "set", port, "master", settings.bridge, "up"], check=True)
        subprocess.run(["ip", "-n", ns, "neigh", "flush", "all"], check=True)
        assert sandboxes.run(rec, "true", timeout=10)["exit_code"] == 0  # resolves the gateway again
    finally:
        subprocess.run(["ip", "link", "del", port], check=False)
    assert (sysfs / "address").read_text().strip() == bridge_mac(settings)
    neigh = subprocess.run(["ip", "-n", ns, "neigh", "show", str(settings.gateway)],
                           capture_output=True, text=True, check=True).stdout
    assert bridge_mac(settings) in neigh, neigh
    with sandboxes.agent(rec, timeout=5) as client:  # old behaviour: ReadTimeout here
        assert client.get("/api/v1/health").json() == {"healthy": True}
