"""Network walls: what a tenant with full control of its netns still cannot do.

A sandbox's root (or a kernel bug that gives it ``CAP_NET_RAW``/``CAP_NET_ADMIN`` in
its netns) can put any bytes on its veth. Everything here is enforced on the host's
side of that wire, so it holds whatever the tenant does inside:

* **Source pinning** (table ``bridge <nft_table>``, hook ``prerouting``): a frame that
  enters the bridge from one of our ports must carry that sandbox's MAC and IPv4 as
  source; an ARP from it must name that MAC and IPv4 as sender. IPv6 and every other
  ethertype are dropped: sandboxes are IPv4-only (no address, no route), and IPv6 from
  them could only be link-local/NDP games with the host. One lookup in a set keyed by
  ``iifname . ether saddr . ip saddr``: O(1) in the number of sandboxes. Fail closed:
  a port named as ours (``cb`` + the ID, ``ids.host_veth``) that is not in the set
  (made by code that forgot its walls) sends nothing; other interfaces are not ours
  and are left alone. (``meta ibrname``, the bridge's own name, would be the tighter
  match; this kernel answers "Operation not supported" for it.)
* **Pinned tables**: a permanent neighbour entry ``ip → mac`` on the bridge (ARP can
  never re-point a sandbox's address at another MAC) and, per port, ``learning off``
  with one static FDB entry: the bridge's forwarding table cannot be flooded and
  frames to a sandbox never go anywhere else. ``flood off``/``mcast_flood off`` keep
  unknown-unicast and multicast from the host off the sandbox ports.
* **Private ranges, default deny** (chain ``walls_forward`` of ``inet <nft_table>``):
  RFC 1918, CGNAT, link-local, multicast, reserved and the IPv6 local ranges are
  refused before any tenant rule; a sandbox opens one only by listing it in
  ``allow_out`` (its policy chain, reached through the same ``egress_policy`` map,
  then accepts it). The host's own addresses are local traffic and stay closed by
  the ``input`` chain (only the resolver is open there).
* **Bounds**: new flows per sandbox address (``ct count``) in forward and input, and
  TCP connections per sandbox to the resolver, so one tenant cannot fill the host's
  conntrack table or the server's file descriptors. The source address these count
  by is trustworthy because of the source pinning above.

The walls chains are base chains of their own (not rules inside ``forward``/``input``)
so that they survive another cellbox process re-applying the shared base chains
(``host.py``); an ``accept`` in one base chain does not stop another from dropping,
hence private ranges consult the sandbox's policy chain themselves.

The names (veth from the ID, MAC from the address) are derived, so the elements can
be added from Python before the container starts, whoever creates the veth.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable

from .. import _proc, ids
from ..config import Settings
from ..errors import CommandFailed

PORTS = "ports"  # ifname: ports whose frames are checked
VETH_PREFIX = ids.VETH_PREFIX  # every sandbox port is named prefix + its ID's first 13 characters (ids.host_veth)
PORT_ADDRS = "port_addrs"  # ifname . MAC . IPv4: what a port may send as
CT_FLOWS = "ct_flows"  # per-source dynamic set with a ct count (forwarded flows)
CT_LOCAL = "ct_local"  # same, for flows to the host (the resolver)
DNS_TCP = "dns_tcp"  # per-source TCP connections to the resolver
PRIVATE4 = "private4"
PRIVATE6 = "private6"

# Not the internet: private, shared (CGNAT), link-local, IETF protocol assignments,
# benchmarking, multicast, reserved and limited broadcast. 198.51.100.0/24 and
# 203.0.113.0/24 (documentation) are deliberately absent: the tests' fake internet
# lives there (tests/nettest/internet.py).
PRIVATE_V4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
              "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4")
# 240.0.0.0/4 already holds 255.255.255.255.
PRIVATE_V6 = ("::/128", "::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8")


def bridge_ruleset(settings: Settings) -> str:
    """The bridge table, idempotent: sets (and their elements) are kept, the chain refilled."""
    t = settings.nft_table
    return f"""
table bridge {t} {{
    set {PORTS} {{ type ifname; }}
    set {PORT_ADDRS} {{ type ifname . ether_addr . ipv4_addr; }}
    chain prerouting {{ type filter hook prerouting priority filter; policy accept; }}
}}
flush chain bridge {t} prerouting
table bridge {t} {{
    chain prerouting {{
        iifname != "{VETH_PREFIX}*" accept
        iifname != @{PORTS} counter drop
        iifname . ether saddr . ip saddr @{PORT_ADDRS} accept
        arp htype 1 arp ptype ip arp hlen 6 arp plen 4 iifname . ether saddr . arp saddr ip @{PORT_ADDRS} \
iifname . arp saddr ether . arp saddr ip @{PORT_ADDRS} accept
        counter drop
    }}
}}
"""


def inet_ruleset(settings: Settings, egress_map: str, reject: str) -> str:
    """The walls chains in our inet table; idempotent like ``host.ruleset``."""
    br, t = settings.bridge, settings.nft_table
    ct_max, dns_max = settings.conntrack_per_sandbox, settings.dns_tcp_per_sandbox
    return f"""
table inet {t} {{
    set {PRIVATE4} {{ type ipv4_addr; flags interval; }}
    set {PRIVATE6} {{ type ipv6_addr; flags interval; }}
    set {CT_FLOWS} {{ type ipv4_addr; size 65535; flags dynamic; }}
    set {CT_LOCAL} {{ type ipv4_addr; size 65535; flags dynamic; }}
    set {DNS_TCP} {{ type ipv4_addr; size 65535; flags dynamic; }}
    chain walls_forward {{ type filter hook forward priority filter - 5; policy accept; }}
    chain walls_input {{ type filter hook input priority filter - 5; policy accept; }}
}}
flush set inet {t} {PRIVATE4}
flush set inet {t} {PRIVATE6}
flush chain inet {t} walls_forward
flush chain inet {t} walls_input
table inet {t} {{
    set {PRIVATE4} {{ type ipv4_addr; flags interval; elements = {{ {", ".join(PRIVATE_V4)} }} }}
    set {PRIVATE6} {{ type ipv6_addr; flags interval; elements = {{ {", ".join(PRIVATE_V6)} }} }}
    chain walls_forward {{
        iifname != "{br}" accept
        ct state established,related accept
        meta nfproto ipv6 drop
        ct state new add @{CT_FLOWS} {{ ip saddr ct count over {ct_max} }} {reject}
        ip daddr @{PRIVATE4} ip saddr vmap @{egress_map}
        ip daddr @{PRIVATE4} {reject}
    }}
    chain walls_input {{
        iifname != "{br}" accept
        ct state established,related accept
        meta nfproto ipv6 drop
        tcp dport 53 ct state new add @{DNS_TCP} {{ ip saddr ct count over {dns_max} }} reject with tcp reset
        ct state new add @{CT_LOCAL} {{ ip saddr ct count over {ct_max} }} {reject}
    }}
}}
"""


def port_link_batch(veth: str, mac: str) -> str:
    """``bridge -batch`` lines for one sandbox port (whoever created the veth runs them).

    Isolated: ports cannot send to each other. ``learning off`` + one static FDB entry:
    the FDB holds exactly one entry per sandbox, whatever source MACs it sends.
    """
    return (f"link set dev {veth} isolated on learning off flood off mcast_flood off\n"
            f"fdb replace {mac} dev {veth} master static\n")


def neigh_line(settings: Settings, address: ipaddress.IPv4Address, mac: str) -> str:
    """``ip -batch`` line pinning the host's neighbour entry for a sandbox."""
    return f"neigh replace {address} lladdr {mac} dev {settings.bridge} nud permanent\n"


def _element(veth: str, mac: str, address: ipaddress.IPv4Address) -> str:
    return f"{veth} . {mac} . {address}"


async def pin(settings: Settings, sandbox_id: str, address: ipaddress.IPv4Address, mac: str) -> None:
    """Let the sandbox's port send as (its MAC, its address) and nothing else."""
    t, veth = settings.nft_table, ids.host_veth(sandbox_id)
    script = (f"add element bridge {t} {PORT_ADDRS} {{ {_element(veth, mac, address)} }}\n"
              f"add element bridge {t} {PORTS} {{ {veth} }}\n")
    await _proc.run(["nft", "-f", "-"], input=script.encode())


async def _elements(settings: Settings) -> list[tuple[str, str, str]]:
    """(veth, MAC, address) of every element of ``port_addrs``."""
    listed = await _proc.run(["nft", "-j", "list", "set", "bridge", settings.nft_table, PORT_ADDRS], check=False)
    found: list[tuple[str, str, str]] = []
    if listed.returncode != 0:
        return found
    for item in json.loads(listed.stdout).get("nftables", []):
        for elem in item.get("set", {}).get("elem", []):
            parts = elem.get("concat", []) if isinstance(elem, dict) else []
            if len(parts) == 3:
                found.append((str(parts[0]), str(parts[1]), str(parts[2])))
    return found


async def _pinned_elements(settings: Settings, veth: str) -> list[tuple[str, str]]:
    """(MAC, address) of the port's elements, from the set (when the caller lost the address)."""
    return [(m, a) for v, m, a in await _elements(settings) if v == veth]


async def prune(settings: Settings, owned_veths: Callable[[], set[str]]) -> list[str]:
    """Remove the walls of ports no live sandbox owns (left by a crash); return their names.

    ``owned_veths`` is called *after* the set is listed: a create records itself before
    it pins its port, so a port pinned meanwhile is always seen as owned.
    """
    listed = await _elements(settings)
    owned = owned_veths()
    stale = sorted({v for v, _, _ in listed if v not in owned})
    for veth in stale:
        for mac, address in [(m, a) for v, m, a in listed if v == veth]:
            await _unpin_port(settings, veth, [(mac, address)])
    return stale


async def unpin(settings: Settings, sandbox_id: str, address: ipaddress.IPv4Address | None,
                mac: str | None) -> None:
    """Remove what :func:`pin` and :func:`neigh_line` made; idempotent.

    Removing the port from ``ports`` first: a port name that is not in the set is not
    ours any more, whatever elements are left.
    """
    veth = ids.host_veth(sandbox_id)
    pairs = [(mac, str(address))] if address is not None and mac is not None else \
        await _pinned_elements(settings, veth)
    await _unpin_port(settings, veth, pairs)


async def _unpin_port(settings: Settings, veth: str, pairs: list[tuple[str, str]]) -> None:
    t = settings.nft_table
    lines = [f"add element bridge {t} {PORTS} {{ {veth} }}", f"delete element bridge {t} {PORTS} {{ {veth} }}"]
    for m, a in pairs:
        key = f"{veth} . {m} . {a}"
        lines += [f"add element bridge {t} {PORT_ADDRS} {{ {key} }}",
                  f"delete element bridge {t} {PORT_ADDRS} {{ {key} }}"]
    try:
        await _proc.run(["nft", "-f", "-"], input=("\n".join(lines) + "\n").encode())
    except CommandFailed:
        listed = await _proc.run(["nft", "list", "table", "bridge", t], check=False)
        if listed.returncode == 0:
            raise
        # No table (the host rebooted, a test removed it): nothing is left to remove.
    for _, a in pairs:
        await _proc.run(["ip", "neigh", "del", a, "dev", settings.bridge], check=False)
