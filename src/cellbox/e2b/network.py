"""E2B's network options as our egress policy (network/policy.py), at create and in
``update_network`` (``PUT /sandboxes/{id}/network``).

``allowOut`` / ``denyOut`` / ``allow_internet_access`` map 1:1 onto Tensorlake's
``allow_out`` / ``deny_out`` / ``allow_internet_access`` (the same rules: allow wins
over deny; CIDRs, addresses and host names). E2B's egress proxy, DNS servers, rules
with transforms, masked hosts and HTTPS ports have no cellbox counterpart: asking for
one is a 400 naming it, never a sandbox that silently ignores it. Public ports
(``allowPublicTraffic: true``) are refused the same way: cellbox asks every request to
a user port for the sandbox's traffic token or a key.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest
from ..network import policy
from ..network.policy import EgressPolicy

_UNSERVED = ("egressProxy", "dnsServers", "rules", "maskRequestHost", "httpsPorts")


def _list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"network.{name}: a list of addresses, CIDRs or host names")
    return value


def parse(net: Any, allow_internet: Any = None) -> tuple[bool, EgressPolicy | None]:
    """(given, policy): whether anything was asked for, and the policy (None: unrestricted)."""
    if net is None and allow_internet is None:
        return False, None
    if net is not None and not isinstance(net, dict):
        raise InvalidRequest("network: must be an object")
    net = net or {}
    if bad := [k for k in _UNSERVED if net.get(k) not in (None, [], {}, False)]:
        raise InvalidRequest(f"network.{bad[0]}: not supported by cellbox")
    if net.get("allowPublicTraffic") is True:
        raise InvalidRequest("network.allowPublicTraffic: public ports are not supported by cellbox; "
                             "send the sandbox's traffic token (e2b-traffic-access-token) instead")
    if allow_internet is None:
        allow_internet = net.get("allow_internet_access", True)
    if not isinstance(allow_internet, bool):
        raise InvalidRequest("allow_internet_access: true or false")
    pol = policy.parse(allow_internet, _list(net.get("allowOut"), "allowOut"), _list(net.get("denyOut"), "denyOut"))
    return True, None if pol.unrestricted else pol
