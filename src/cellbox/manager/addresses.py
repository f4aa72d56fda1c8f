"""Sandbox addresses: the lowest free one in the subnet, within what one bridge holds.

Every sandbox with an address has a veth port on the host's one bridge, and a Linux
bridge has at most 1023 ports (port numbers are 10 bits and 0 is reserved:
``BR_MAX_PORTS``; the 1024th ``ip link set … master`` answers ``EXFULL``, measured on
this kernel in a scratch netns). Past that a create would fail deep in runc's
prestart hook; refusing at allocation instead gives the client a clear 429 naming the
limit, before any part is made. More than 1023 sandboxes per host needs a second
bridge (docs/ARCHITECTURE.md, "Density").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from ..errors import LimitExceeded

BRIDGE_PORTS = 1023


def capacity(subnet: ipaddress.IPv4Network) -> int:
    """Sandboxes that can be on the bridge at once: the subnet's hosts less the
    gateway, at most one bridge's ports."""
    return min(BRIDGE_PORTS, subnet.num_addresses - 3)


def check_room(subnet: ipaddress.IPv4Network, on_bridge: int, *, resuming: bool = False) -> None:
    """429 if one more sandbox would not fit on the bridge. ``on_bridge`` counts the
    sandboxes with a port (``Store.on_bridge``): suspended ones keep their address
    (and the user id range derived from it) but not their veth."""
    if on_bridge >= capacity(subnet):
        what = "resume" if resuming else "create"
        raise LimitExceeded(f"cannot {what}: this host runs at most {capacity(subnet)} sandboxes at once "
                            f"(one network bridge: {BRIDGE_PORTS} ports; subnet {subnet}); {on_bridge} are "
                            "running: delete or suspend some")


def lowest_free(subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address,
                used: Collection[str]) -> ipaddress.IPv4Address | None:
    """The lowest host address that is neither the gateway nor in ``used``.

    Integer arithmetic over the used set, not ``subnet.hosts()``: that built an
    address object per candidate, ~1 ms per create at 1,000 live sandboxes.
    """
    taken = {int(ipaddress.IPv4Address(a)) for a in used}
    taken.add(int(gateway))
    first, last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
    for n in range(first, min(last, first + len(taken)) + 1):
        if n not in taken:
            return ipaddress.IPv4Address(n)
    return None
