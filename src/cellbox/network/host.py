"""Host-wide network pieces, made once and shared by all sandboxes: bridge and nft table.

Idempotent: the server calls :func:`ensure` at every start (after a reboot nothing of
this survives), and setup calls it too.

The bridge gets a fixed MAC address (derived from the gateway address, like the
sandboxes' own). Without one, Linux gives a bridge the lowest MAC address of its
ports and changes it whenever a port comes or goes: every create and destroy of a
sandbox could change the gateway's MAC under the feet of every running sandbox.
A sandbox whose ARP entry for the gateway still named a port that had been deleted
sent its packets to nowhere (the bridge floods them, isolated ports drop them, the
host ignores a frame not addressed to it) until its neighbour entry timed out and
was probed again, seconds later. That was the "``/run`` gets no answer" hang seen
while other sandboxes were being created and destroyed (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from .. import _proc
from ..config import Settings
from . import firewall, walls
from .netns import mac_for


def _bridge_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


NET_ADDR_SET = "3"  # addr_assign_type: the address was set explicitly; the bridge keeps it


def _has_fixed_mac(name: str, mac: str) -> bool:
    sysfs = Path(f"/sys/class/net/{name}")
    try:
        return (sysfs / "address").read_text().strip() == mac and (
            sysfs / "addr_assign_type").read_text().strip() == NET_ADDR_SET
    except FileNotFoundError:
        return False


def ruleset(settings: Settings) -> str:
    """Our table's shared part, as one atomic ``nft -f`` script.

    Re-applied at every start of every cellbox process on the host, so it must not
    disturb what other processes hold: the base chains are flushed and refilled, while
    the per-sandbox policy chains, sets and map entries (``firewall.py``) are left as
    they are. (An earlier version deleted and re-created the table, which wiped the
    policies of the sandboxes of any other running process.)
    """
    br, gw, net, t = settings.bridge, settings.gateway, settings.subnet, settings.nft_table
    fw = firewall
    return f"""
table inet {t} {{
    map {fw.EGRESS_MAP} {{ type ipv4_addr : verdict; }}
    set {fw.DNS_BLOCKED} {{ type ipv4_addr; }}
    set {fw.DNS_FORCED} {{ type ipv4_addr; }}
    chain input {{ type filter hook input priority filter; policy accept; }}
    chain forward {{ type filter hook forward priority filter; policy accept; }}
    chain egress {{ }}
    chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
    chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
}}
flush chain inet {t} input
flush chain inet {t} forward
flush chain inet {t} egress
flush chain inet {t} prerouting
flush chain inet {t} postrouting
table inet {t} {{
    chain input {{
        iifname "{br}" ct state established,related accept
        iifname "{br}" ip saddr @{fw.DNS_BLOCKED} {fw.REJECT}
        iifname "{br}" ip daddr {gw} udp dport 53 accept
        iifname "{br}" ip daddr {gw} tcp dport 53 accept
        iifname "{br}" drop
    }}
    chain forward {{
        oifname "{br}" ct state established,related accept
        oifname "{br}" drop
        iifname "{br}" ip daddr 169.254.0.0/16 drop
        iifname "{br}" ip daddr {net} drop
        iifname "{br}" jump egress
    }}
    chain egress {{
        ct state established,related accept
        ip saddr vmap @{fw.EGRESS_MAP}
    }}
    chain prerouting {{
        iifname "{br}" ip saddr @{fw.DNS_FORCED} udp dport 53 dnat ip to {gw}
        iifname "{br}" ip saddr @{fw.DNS_FORCED} tcp dport 53 dnat ip to {gw}
    }}
    chain postrouting {{
        ip saddr {net} oifname != "{br}" masquerade
    }}
}}
"""


def bridge_mac(settings: Settings) -> str:
    """The bridge's MAC address: fixed, so the sandboxes' ARP entries for the gateway
    stay right while ports come and go (see the module docstring)."""
    return mac_for(settings.gateway)


async def ensure(settings: Settings) -> None:
    if not _bridge_exists(settings.bridge):
        await _proc.run(["ip", "link", "add", settings.bridge, "type", "bridge"], check=False)
    mac = bridge_mac(settings)
    if not _has_fixed_mac(settings.bridge, mac):
        await _proc.run(["ip", "link", "set", settings.bridge, "address", mac])
    iface = ipaddress.IPv4Interface(f"{settings.gateway}/{settings.subnet.prefixlen}")
    addrs = (await _proc.run(["ip", "-br", "addr", "show", "dev", settings.bridge])).stdout
    if str(iface) not in addrs:
        await _proc.run(["ip", "addr", "add", str(iface), "dev", settings.bridge])
    await _proc.run(["ip", "link", "set", settings.bridge, "up"])
    # Outbound NAT needs forwarding. This is the one host-wide setting we change.
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    # The shared chains, then the walls (their own base chains and bridge table), in
    # one transaction: there is no moment with one and not the other.
    script = ruleset(settings) + walls.inet_ruleset(settings, firewall.EGRESS_MAP, firewall.REJECT) \
        + walls.bridge_ruleset(settings)
    await _proc.run(["nft", "-f", "-"], input=script.encode())


async def teardown(settings: Settings) -> None:
    """Remove the bridge and the tables (used by tests with their own settings)."""
    await _proc.run(["nft", "delete", "table", "inet", settings.nft_table], check=False)
    await _proc.run(["nft", "delete", "table", "bridge", settings.nft_table], check=False)
    await _proc.run(["ip", "link", "del", settings.bridge], check=False)
