"""The network as the manager's ``ports.Network``: netns + veth, the port's walls, egress.

Two ways a sandbox gets its network (``settings.userns``): without a user namespace
the netns and veth are made here and the container joins them; with one, runc makes
the netns and the prestart hook (``runtime/nethook.c``) wires it, from the
``PortWiring`` made here (the port's walls are pinned first, host-side).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .. import ids
from ..config import Settings
from . import netns, walls
from .egress import EgressControl, Resolved
from .policy import EgressPolicy


@dataclass(frozen=True)
class PortWiring:
    """What the prestart hook needs to wire one sandbox's port (its argv, in order)."""

    netns: str
    veth: str
    mac: str
    cidr: str
    gateway: str
    bridge: str
    link_batch: str
    neigh: str

    def hook_args(self) -> list[str]:
        return [self.netns, self.veth, self.mac, self.cidr, self.gateway, self.bridge, self.link_batch,
                self.neigh]


class NodeNetwork:
    def __init__(self, settings: Settings, egress: EgressControl) -> None:
        self.settings = settings
        self.egress = egress

    async def create_netns(self, sandbox_id: str, address: ipaddress.IPv4Address) -> str:
        """Make the netns + veth now (no user namespace); returns the netns path."""
        await netns.create(self.settings, sandbox_id, address)
        return netns.path(sandbox_id)

    async def prepare_hook(self, sandbox_id: str, address: ipaddress.IPv4Address) -> list[str]:
        """Pin the port's walls (works before the veth exists) and return the hook's
        wiring arguments (``PortWiring.hook_args``)."""
        await netns.pin_walls(self.settings, sandbox_id, address)
        mac = netns.mac_for(address)
        veth = ids.host_veth(sandbox_id)
        return PortWiring(
            netns=ids.netns(sandbox_id), veth=veth, mac=mac, cidr=f"{address}/{self.settings.subnet.prefixlen}",
            gateway=str(self.settings.gateway), bridge=self.settings.bridge,
            link_batch=walls.port_link_batch(veth, mac), neigh=walls.neigh_line(self.settings, address, mac),
        ).hook_args()

    async def remove_netns(self, sandbox_id: str, address: ipaddress.IPv4Address | None) -> None:
        await netns.destroy(self.settings, sandbox_id, address)

    async def resolve(self, policy: EgressPolicy | None) -> Resolved:
        """The policy's host names resolved (400 for one that does not): before any part is made."""
        return await self.egress.resolve(policy)

    async def apply_egress(self, sandbox_id: str, ip: str, policy: EgressPolicy, resolved: Resolved | None) -> None:
        await self.egress.apply(sandbox_id, ip, policy, resolved)

    async def remove_egress(self, sandbox_id: str) -> None:
        await self.egress.remove(sandbox_id)
