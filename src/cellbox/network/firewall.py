"""Per-sandbox egress rules in our nftables table (``inet cellbox``).

Layout (the host-wide part is in ``host.py``)::

    forward ─ iifname cellbox0 → egress
    egress  ─ ct state established,related accept
              ip saddr vmap @egress_policy          # sandbox address → jump sbx-<id>
    sbx-<id> ─ ip daddr @sbx-<id>-d4 / -dn4  reject  # deny: static CIDRs / learned from DNS
               ip6 daddr @…-d6 / -dn6        reject
               (default-deny only:) ip daddr @…-a4 / -an4 accept, ip6 …, reject
    input   ─ ip saddr @dns_blocked reject          # allow_internet_access: false
    prerouting (nat) ─ ip saddr @dns_forced, dport 53 → dnat to the gateway

An unrestricted sandbox has no chain and no map entry: the default costs nothing.
A verdict map keyed by the sandbox's address makes the lookup O(1) whatever the
number of sandboxes. Static entries live in interval sets (CIDRs, auto-merged); host
names' addresses live in timeout sets that the DNS forwarder fills as the sandbox
resolves them, so a rule follows a name as its addresses change.

Every change is one ``nft -f`` transaction, so a policy is replaced atomically: no
packet ever sees half of the old and half of the new rules, and established
connections are untouched (they match before the policy).

Denied traffic is *rejected* (ICMP admin-prohibited, which TCP reports as "no route
to host"), not dropped: a program fails at once instead of hanging until its timeout.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass

from .. import _proc
from ..errors import CommandFailed
from .policy import EgressPolicy

EGRESS_MAP = "egress_policy"
DNS_BLOCKED = "dns_blocked"
DNS_FORCED = "dns_forced"
REJECT = "reject with icmpx type admin-prohibited"
# Learned addresses outlive their TTL by this much: a client connects right after it
# reads the answer, and answers with a TTL of 0 or 1 s are common.
LEARN_GRACE_SECS = 15
MIN_TTL_SECS = 1

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def chain(sandbox_id: str) -> str:
    return f"sbx-{sandbox_id}"


@dataclass(frozen=True)
class _SetSpec:
    suffix: str
    family: str  # "ip" or "ip6"
    dynamic: bool  # True: learned addresses with timeouts; False: static CIDRs

    def name(self, sandbox_id: str) -> str:
        return f"{chain(sandbox_id)}-{self.suffix}"

    def declaration(self, table: str, sandbox_id: str) -> str:
        typ = "ipv4_addr" if self.family == "ip" else "ipv6_addr"
        flags = "flags timeout;" if self.dynamic else "flags interval; auto-merge;"
        return f"add set inet {table} {self.name(sandbox_id)} {{ type {typ}; {flags} }}"


_DENY = (_SetSpec("d4", "ip", False), _SetSpec("dn4", "ip", True),
         _SetSpec("d6", "ip6", False), _SetSpec("dn6", "ip6", True))
_ALLOW = (_SetSpec("a4", "ip", False), _SetSpec("an4", "ip", True),
          _SetSpec("a6", "ip6", False), _SetSpec("an6", "ip6", True))
_ALL_SETS = _DENY + _ALLOW


def _learned_set(sandbox_id: str, side: str, addr: Addr) -> str:
    suffix = ("a" if side == "allow" else "d") + "n" + ("4" if addr.version == 4 else "6")
    return f"{chain(sandbox_id)}-{suffix}"


def _elements(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _ensure_absent(table: str, name: str, key: str) -> list[str]:
    """Commands that remove element ``key`` whether or not it is present.

    ``delete element`` of a missing element fails the whole transaction, and nft has
    no "delete if exists": adding it first makes the delete always valid.
    """
    return [f"add element inet {table} {name} {{ {key} }}", f"delete element inet {table} {name} {{ {key} }}"]


def apply_script(table: str, sandbox_id: str, ip: str, policy: EgressPolicy,
                 resolved: dict[str, list[tuple[Addr, int]]], resolver: str) -> str:
    """The transaction that installs (or replaces) one sandbox's policy.

    DNS: with internet access, every port-53 packet of the sandbox is redirected to our
    resolver (so host-name rules cannot be bypassed by asking another server). Without
    it, DNS is blocked, unless ``allow_out`` lists the resolver's address (Tensorlake's
    rule: then host-name entries still work).
    """
    c = chain(sandbox_id)
    lines = [f"add chain inet {table} {c}", f"flush chain inet {table} {c}"]
    for spec in _ALL_SETS:
        lines += [spec.declaration(table, sandbox_id), f"flush set inet {table} {spec.name(sandbox_id)}"]
    for side, rules in (("deny", policy.deny), ("allow", policy.allow)):
        static = {4: [str(n) for n in rules.nets4], 6: [str(n) for n in rules.nets6]}
        for version, nets in static.items():
            if nets:
                name = f"{c}-{side[0]}{version}"
                lines.append(f"add element inet {table} {name} {_elements(nets)}")
        learned: dict[str, list[str]] = {}
        for pattern in rules.names:
            for addr, ttl in resolved.get(pattern, ()):
                learned.setdefault(_learned_set(sandbox_id, side, addr), []).append(_timed(addr, ttl))
        for name, items in learned.items():
            lines.append(f"add element inet {table} {name} {_elements(items)}")
    for spec in _DENY:
        lines.append(f"add rule inet {table} {c} {spec.family} daddr @{spec.name(sandbox_id)} {REJECT}")
    if policy.default_deny:
        for spec in _ALLOW:
            lines.append(f"add rule inet {table} {c} {spec.family} daddr @{spec.name(sandbox_id)} accept")
        lines.append(f"add rule inet {table} {c} {REJECT}")
    lines.append(f"add element inet {table} {EGRESS_MAP} {{ {ip} : jump {c} }}")
    resolver_listed = any(ipaddress.ip_address(resolver) in net for net in policy.allow.nets4)
    if policy.allow_internet:
        lines.append(f"add element inet {table} {DNS_FORCED} {{ {ip} }}")
    else:
        lines += _ensure_absent(table, DNS_FORCED, ip)
    if policy.allow_internet or resolver_listed:
        lines += _ensure_absent(table, DNS_BLOCKED, ip)
    else:
        lines.append(f"add element inet {table} {DNS_BLOCKED} {{ {ip} }}")
    return "\n".join(lines) + "\n"


def remove_script(table: str, sandbox_id: str, ip: str | None, *, with_map: bool = True) -> str:
    c = chain(sandbox_id)
    lines = [f"add chain inet {table} {c}", f"flush chain inet {table} {c}"]
    if ip:
        if with_map:
            lines += [f"add element inet {table} {EGRESS_MAP} {{ {ip} : jump {c} }}",
                      f"delete element inet {table} {EGRESS_MAP} {{ {ip} }}"]
        lines += _ensure_absent(table, DNS_FORCED, ip)
        lines += _ensure_absent(table, DNS_BLOCKED, ip)
    lines.append(f"delete chain inet {table} {c}")
    for spec in _ALL_SETS:
        lines += [spec.declaration(table, sandbox_id), f"delete set inet {table} {spec.name(sandbox_id)}"]
    return "\n".join(lines) + "\n"


def lifetime(ttl: int) -> int:
    """Seconds a learned address stays in a set for an answer with this TTL."""
    return max(ttl, MIN_TTL_SECS) + LEARN_GRACE_SECS


def _timed(addr: Addr, ttl: int) -> str:
    return f"{addr} timeout {lifetime(ttl)}s"


async def _nft(script: str) -> None:
    await _proc.run(["nft", "-f", "-"], input=script.encode())


async def apply(table: str, sandbox_id: str, ip: str, policy: EgressPolicy,
                resolved: dict[str, list[tuple[Addr, int]]], resolver: str) -> None:
    script = apply_script(table, sandbox_id, ip, policy, resolved, resolver)
    try:
        await _nft(script)
    except CommandFailed as exc:
        if "File exists" not in str(exc):
            raise
        # The address still maps to a sandbox that had it before and was not cleaned
        # up (a crash): that entry is stale by construction, since we hold the address.
        await _proc.run(["nft", "delete", "element", "inet", table, EGRESS_MAP, f"{{ {ip} }}"], check=False)
        await _nft(script)


async def remove(table: str, sandbox_id: str, ip: str | None) -> None:
    """Remove one sandbox's rules; idempotent."""
    try:
        await _nft(remove_script(table, sandbox_id, ip))
        return
    except CommandFailed:
        pass
    # The map entry for ``ip`` points at another chain (the address was reused after a
    # crash), or the shared sets are gone: remove only what is this sandbox's own.
    try:
        await _nft(remove_script(table, sandbox_id, None))
    except CommandFailed:
        listed = await _proc.run(["nft", "list", "table", "inet", table], check=False)
        if listed.returncode == 0:
            raise
        # No table at all (the host rebooted, or it was removed): nothing is left.


async def remove_orphan(table: str, sandbox_id: str) -> None:
    """Remove the rules of a sandbox nobody knows the address of any more (reconcile).

    The address is found from the verdict map (one listing); the normal path never
    needs this, as the published policy file records the address.
    """
    listed = await _proc.run(["nft", "-j", "list", "map", "inet", table, EGRESS_MAP], check=False)
    ips: list[str] = []
    if listed.returncode == 0:
        for item in json.loads(listed.stdout).get("nftables", []):
            for key, verdict in item.get("map", {}).get("elem", []):
                if verdict.get("jump", {}).get("target") == chain(sandbox_id) and isinstance(key, str):
                    ips.append(key)
    for ip in ips or [None]:  # type: ignore[list-item]  # None: remove() finds the address itself
        await remove(table, sandbox_id, ip)


async def learn(table: str, sandbox_id: str, side: str, addrs: list[tuple[Addr, int]]) -> bool:
    """Add addresses the forwarder saw in an answer; False if the sandbox is gone."""
    by_set: dict[str, list[str]] = {}
    for addr, ttl in addrs:
        by_set.setdefault(_learned_set(sandbox_id, side, addr), []).append(_timed(addr, ttl))
    script = "".join(f"add element inet {table} {name} {_elements(items)}\n" for name, items in by_set.items())
    if not script:
        return True
    result = await _proc.run(["nft", "-f", "-"], input=script.encode(), check=False)
    return result.returncode == 0


async def chains(table: str) -> list[str]:
    """Sandbox IDs that have a policy chain in the table (for leak checks, reconcile)."""
    out = (await _proc.run(["nft", "list", "chains", "inet"], check=False)).stdout
    return _parse_chains(out, table)


def _parse_chains(listing: str, table: str) -> list[str]:
    found, in_table = [], False
    for line in listing.splitlines():
        words = line.split()
        if words[:1] == ["table"]:
            in_table = words[-2:] == [table, "{"]
        elif in_table and words[:1] == ["chain"] and words[1].startswith("sbx-"):
            found.append(words[1][4:])
    return found
