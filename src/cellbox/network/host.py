"""Host-wide network pieces, made once and shared by all sandboxes: bridge and nft table.

Idempotent: the server calls :func:`ensure` at every start (after a reboot nothing of
this survives), and setup calls it too.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from .. import _proc
from ..config import Settings


def _bridge_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def ruleset(settings: Settings) -> str:
    """Our whole nftables table, as one atomic ``nft -f`` script."""
    br, gw, net, t = settings.bridge, settings.gateway, settings.subnet, settings.nft_table
    return f"""
table inet {t}
delete table inet {t}
table inet {t} {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{br}" ct state established,related accept
        iifname "{br}" ip daddr {gw} udp dport 53 accept
        iifname "{br}" ip daddr {gw} tcp dport 53 accept
        iifname "{br}" drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        oifname "{br}" ct state established,related accept
        oifname "{br}" drop
        iifname "{br}" ip daddr 169.254.0.0/16 drop
        iifname "{br}" ip daddr {net} drop
        iifname "{br}" jump egress
    }}
    chain egress {{
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {net} oifname != "{br}" masquerade
    }}
}}
"""


async def ensure(settings: Settings) -> None:
    if not _bridge_exists(settings.bridge):
        await _proc.run(["ip", "link", "add", settings.bridge, "type", "bridge"], check=False)
    iface = ipaddress.IPv4Interface(f"{settings.gateway}/{settings.subnet.prefixlen}")
    addrs = (await _proc.run(["ip", "-br", "addr", "show", "dev", settings.bridge])).stdout
    if str(iface) not in addrs:
        await _proc.run(["ip", "addr", "add", str(iface), "dev", settings.bridge])
    await _proc.run(["ip", "link", "set", settings.bridge, "up"])
    # Outbound NAT needs forwarding. This is the one host-wide setting we change.
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    await _proc.run(["nft", "-f", "-"], input=ruleset(settings).encode())


async def teardown(settings: Settings) -> None:
    """Remove the bridge and the table (used by tests with their own settings)."""
    await _proc.run(["nft", "delete", "table", "inet", settings.nft_table], check=False)
    await _proc.run(["ip", "link", "del", settings.bridge], check=False)
