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
    received it, until the sandbox's ARP entry timed out (half a minute or more). This
    replays that sequence with a port whose MAC is lower than any other: it joins the
    bridge, a command starts, the port leaves while the command runs, the command's
    output must still arrive.
    """
    import json
    import os
    import subprocess
    from pathlib import Path

    from cellbox.network.host import bridge_mac

    sysfs = Path(f"/sys/class/net/{settings.bridge}")
    assert (sysfs / "address").read_text().strip() == bridge_mac(settings)
    rec = sandboxes.create()
    port = f"ctmac{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", port, "address", "02:00:00:00:00:01", "type", "veth",
                    "peer", "name", port + "p"], check=True)
    try:
        subprocess.run(["ip", "link", "set", port, "master", settings.bridge, "up"], check=True)
        body = {"command": "/bin/sh", "args": ["-c", "sleep 0.5; echo done"], "timeout": 10}
        with sandboxes.agent(rec, timeout=5) as client:  # before the fix: ReadTimeout below
            with client.stream("POST", "/api/v1/processes/run", json=body) as r:
                lines = r.iter_lines()
                assert next(line for line in lines if line.startswith("data:"))  # the command started
                subprocess.run(["ip", "link", "del", port], check=True)  # ... and the port leaves
                events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    finally:
        subprocess.run(["ip", "link", "del", port], check=False, capture_output=True)
    assert [e.get("line") for e in events if "line" in e] == ["done"]
    assert events[-1].get("exit_code") == 0, events
    assert (sysfs / "address").read_text().strip() == bridge_mac(settings)
