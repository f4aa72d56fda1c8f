"""A sandbox's egress policy (spec §2.4 "network"): parsed, validated, normalised.

Pure data, no I/O: the API validates a request with it before anything is made, and
the firewall and the DNS forwarder read the same object. Semantics (Tensorlake's):

* ``deny_out`` beats ``allow_out``; established/related traffic is always allowed;
* ``allow_internet_access: false`` blocks all egress *including DNS*;
* a non-empty ``allow_out`` makes the policy default-deny, and then
  ``allow_internet_access: true`` only means "the resolver stays reachable";
* entries are IPv4/IPv6 addresses, CIDRs or host names (an optional ``:port`` is
  accepted and ignored, as Tensorlake does). A name ``*.example.com`` matches every
  name below ``example.com`` (not the apex itself).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest

MAX_ENTRIES = 4096  # per list; nft sets take far more, this bounds a request's cost
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rules:
    """One side of a policy (allow or deny), split by what enforces each part."""

    nets4: tuple[ipaddress.IPv4Network, ...] = ()
    nets6: tuple[ipaddress.IPv6Network, ...] = ()
    names: tuple[str, ...] = ()  # lowercase, no trailing dot; may start with "*."

    def __bool__(self) -> bool:
        return bool(self.nets4 or self.nets6 or self.names)


@dataclass(frozen=True)
class EgressPolicy:
    allow_internet: bool = True
    allow: Rules = field(default_factory=Rules)
    deny: Rules = field(default_factory=Rules)
    # The entries as the client sent them, echoed back in ``network_policy``.
    wire: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def unrestricted(self) -> bool:
        return self.allow_internet and not self.allow and not self.deny

    @property
    def default_deny(self) -> bool:
        return not self.allow_internet or bool(self.allow)

    @property
    def names(self) -> tuple[str, ...]:
        return self.allow.names + self.deny.names

    def to_wire(self) -> dict[str, Any]:
        return dict(self.wire)


def name_matches(pattern: str, qname: str) -> bool:
    qname = qname.lower().rstrip(".")
    if pattern.startswith("*."):
        return qname.endswith(pattern[1:])
    return qname == pattern


def matches_any(patterns: tuple[str, ...], qname: str) -> bool:
    return any(name_matches(pattern, qname) for pattern in patterns)


def _hostname(entry: str) -> str | None:
    """The normalised host name in ``entry`` (``:port`` dropped), or None."""
    host = entry.lower().rstrip(".")
    if ":" in host:
        host, _, port = host.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            return None
    labels = host.split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return None  # "*.com"-style wildcards would match half the internet by accident
    if not labels or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None  # "300.1.2.3" is a bad address, not a host name
    return host


def _address(entry: str) -> IPNet | None:
    text = entry
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def parse_rules(entries: list[str], field_name: str) -> Rules:
    if len(entries) > MAX_ENTRIES:
        raise InvalidRequest(f"network.{field_name}: at most {MAX_ENTRIES} entries")
    nets4: list[ipaddress.IPv4Network] = []
    nets6: list[ipaddress.IPv6Network] = []
    names: list[str] = []
    for raw in entries:
        entry = raw.strip() if isinstance(raw, str) else ""
        if not entry:
            raise InvalidRequest(f"network.{field_name}: empty entry")
        net = _address(entry)
        if isinstance(net, ipaddress.IPv4Network):
            nets4.append(net)
        elif isinstance(net, ipaddress.IPv6Network):
            nets6.append(net)
        elif name := _hostname(entry):
            names.append(name)
        else:
            raise InvalidRequest(
                f"network.{field_name}: {raw!r} is not an IP address, a CIDR or a host name"
            )
    return Rules(tuple(dict.fromkeys(nets4)), tuple(dict.fromkeys(nets6)), tuple(dict.fromkeys(names)))


def parse(allow_internet_access: bool = True, allow_out: list[str] | None = None,
          deny_out: list[str] | None = None) -> EgressPolicy:
    allow_out, deny_out = list(allow_out or []), list(deny_out or [])
    return EgressPolicy(
        allow_internet=allow_internet_access,
        allow=parse_rules(allow_out, "allow_out"),
        deny=parse_rules(deny_out, "deny_out"),
        wire={"allow_internet_access": allow_internet_access, "allow_out": allow_out, "deny_out": deny_out},
    )


def from_wire(wire: dict[str, Any] | None) -> EgressPolicy | None:
    """The policy stored in a record or manifest; None for "unrestricted"."""
    if not wire:
        return None
    pol = parse(wire.get("allow_internet_access", True), wire.get("allow_out"), wire.get("deny_out"))
    return None if pol.unrestricted else pol
