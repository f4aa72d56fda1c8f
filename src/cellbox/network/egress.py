"""Egress control of one host: policies in, nftables rules and DNS learning out.

Who calls what:

* the manager calls :meth:`EgressControl.resolve` while validating a request (a name
  that does not resolve is a 400 before anything is made or changed), then
  :meth:`apply` once the sandbox has its address (before its first instruction runs)
  and :meth:`remove` when the sandbox goes;
* the DNS forwarder calls :meth:`lookup` for every query's source address and
  :meth:`learn` with the answer, *before* relaying it, so the sandbox can connect to an
  allowed name's new address the moment it learns it.

A policy is *published* as a small file under ``/run/cellbox/egress`` (by sandbox ID,
with an ``ip/<address>`` link), because every cellbox process on the host (a server, a
test's manager) serves the resolver with ``SO_REUSEPORT``: whichever one the kernel
hands a query to must know the policy of a sandbox some other process created.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnresolvableHost
from . import dnsmsg, firewall
from .firewall import Addr
from .policy import EgressPolicy, matches_any

log = logging.getLogger(__name__)

Resolved = dict[str, list[tuple[Addr, int]]]


@dataclass(frozen=True)
class Published:
    """What the forwarder needs to know about one restricted sandbox.

    ``learned`` remembers until when this process made each learned address live
    (monotonic seconds), so a name looked up again and again costs one ``nft`` call
    per ~grace period, not one per lookup. It belongs to this version of the policy
    file: every apply rewrites the file, so a new policy (whose sets were flushed)
    starts with an empty memory.
    """

    sandbox_id: str
    ip: str
    allow_names: tuple[str, ...]
    deny_names: tuple[str, ...]
    learned: dict[tuple[str, str], float] = field(default_factory=dict, compare=False, repr=False)

    def sides(self, qname: str) -> list[str]:
        """Which of the sandbox's sets an answer for ``qname`` goes into."""
        return [side for side, names in (("deny", self.deny_names), ("allow", self.allow_names))
                if matches_any(names, qname)]


class EgressControl:
    def __init__(self, table: str, run_dir: Path, resolver: str, upstreams: Callable[[], list[str]]) -> None:
        self.table = table
        self.resolver = resolver  # the forwarder's address, as sandboxes see it
        self.dir = run_dir / "egress"
        self.by_ip = self.dir / "ip"
        self._upstreams = upstreams
        self._cache: dict[str, tuple[tuple[int, int], Published | None]] = {}

    # -- policy lifecycle ---------------------------------------------------------------

    async def resolve(self, policy: EgressPolicy | None) -> Resolved:
        """Addresses of every plain host name in ``policy``; 400 naming the first that fails."""
        resolved: Resolved = {}
        if policy is None:
            return resolved
        for name in policy.names:
            if name.startswith("*."):
                continue  # a wildcard is learned from the sandbox's own queries only
            found = await dnsmsg.resolve(name, self._upstreams())
            if not found:
                raise UnresolvableHost(name)
            resolved[name] = found
        return resolved

    async def apply(self, sandbox_id: str, ip: str, policy: EgressPolicy | None,
                    resolved: Resolved | None = None) -> None:
        """Install ``policy`` for the sandbox at ``ip``, replacing any; None: unrestricted."""
        if policy is None or policy.unrestricted:
            await self.remove(sandbox_id)
            return
        if resolved is None:
            resolved = await self.resolve(policy)
        # Published first, so that the forwarder learns the sandbox's lookups from now
        # on; and again after, so that no forwarder keeps a memory of addresses it
        # learned into the sets the transaction has just flushed.
        pub = Published(sandbox_id, ip, policy.allow.names, policy.deny.names)
        self._publish(pub)
        await firewall.apply(self.table, sandbox_id, ip, policy, resolved, self.resolver)
        self._publish(pub)

    async def remove(self, sandbox_id: str) -> None:
        """Remove a sandbox's rules and published policy; idempotent and cheap when none."""
        record = self.dir / f"{sandbox_id}.json"
        try:
            ip = json.loads(record.read_text())["ip"]
        except FileNotFoundError:
            return
        except (ValueError, KeyError):
            ip = None
        await firewall.remove(self.table, sandbox_id, ip)
        if ip:
            link = self.by_ip / ip
            if link.is_symlink() and os.readlink(link).endswith(f"/{sandbox_id}.json"):
                link.unlink(missing_ok=True)
        record.unlink(missing_ok=True)

    def published(self) -> list[str]:
        """IDs of sandboxes with a published policy (leak checks, reconcile)."""
        if not self.dir.is_dir():
            return []
        return [p.stem for p in self.dir.glob("*.json")]

    def prune_links(self) -> None:
        """Remove address links whose policy file is gone (a crash between the two)."""
        if self.by_ip.is_dir():
            for link in self.by_ip.iterdir():
                if link.is_symlink() and not link.exists():
                    link.unlink(missing_ok=True)

    def _publish(self, pub: Published) -> None:
        self.by_ip.mkdir(parents=True, exist_ok=True)
        record = self.dir / f"{pub.sandbox_id}.json"
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sandbox_id": pub.sandbox_id, "ip": pub.ip,
                                   "allow_names": pub.allow_names, "deny_names": pub.deny_names}))
        tmp.replace(record)
        link_tmp = self.by_ip / f".{pub.ip}.tmp"
        link_tmp.unlink(missing_ok=True)
        link_tmp.symlink_to(f"../{pub.sandbox_id}.json")
        link_tmp.replace(self.by_ip / pub.ip)

    # -- the forwarder's side -----------------------------------------------------------

    def lookup(self, ip: str) -> Published | None:
        """The published policy of the sandbox at ``ip`` (one stat when unchanged)."""
        path = self.by_ip / ip
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._cache.pop(ip, None)
            return None
        key = (st.st_ino, st.st_mtime_ns)
        cached = self._cache.get(ip)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            data = json.loads(path.read_text())
            pub = Published(data["sandbox_id"], data["ip"], tuple(data["allow_names"]), tuple(data["deny_names"]))
        except (OSError, ValueError, KeyError):
            pub = None
        self._cache[ip] = (key, pub)
        return pub

    async def learn(self, pub: Published, qname: str, answer: bytes) -> None:
        """Put the addresses of an answer for a ruled name into the sandbox's sets."""
        sides = pub.sides(qname)
        if not sides:
            return
        now = time.monotonic()
        for side in sides:
            due = []
            for addr, ttl in dnsmsg.addresses(answer):
                live_until = now + firewall.lifetime(ttl)
                if pub.learned.get((side, str(addr)), 0.0) < live_until - firewall.LEARN_GRACE_SECS / 2:
                    due.append((addr, ttl))
            if not due:
                continue
            if await firewall.learn(self.table, pub.sandbox_id, side, due):
                for addr, ttl in due:
                    pub.learned[(side, str(addr))] = now + firewall.lifetime(ttl)
            else:
                log.debug("egress: sandbox %s is gone; not learning %s", pub.sandbox_id, qname)
