"""Reading DNS messages for the name rules: the question, and the addresses answered.

dnspython does the wire format (compression, CNAME records, EDNS); this module only
decides which addresses an answer gives *for the name asked*, and resolves a name
ourselves when a policy is set (to refuse a name that does not resolve).
"""

from __future__ import annotations

import ipaddress

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from .firewall import Addr

QUERY_TIMEOUT = 3.0


def question(wire: bytes) -> str | None:
    """The query's name (lowercase, no trailing dot), or None if unparsable."""
    try:
        msg = dns.message.from_wire(wire, question_only=True)
    except (dns.exception.DNSException, ValueError):
        return None
    if not msg.question:
        return None
    return msg.question[0].name.to_text(omit_final_dot=True).lower()


def addresses(wire: bytes) -> list[tuple[Addr, int]]:
    """The A/AAAA addresses in an answer, with their TTLs.

    Every address record of the answer section counts: a resolver's answer holds the
    CNAME chain from the asked name to its addresses and nothing else, so they all
    belong to the name asked.
    """
    try:
        msg = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        return []
    found: list[tuple[Addr, int]] = []
    for rrset in msg.answer:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            for rdata in rrset:
                found.append((ipaddress.ip_address(rdata.address), int(rrset.ttl)))
    return found


async def resolve(name: str, upstreams: list[str]) -> list[tuple[Addr, int]] | None:
    """A and AAAA addresses of ``name``; None if it does not exist or nobody answers.

    Asks the same upstreams as the sandboxes' forwarder, so the addresses we allow at
    set time are the ones the sandbox will be given.
    """
    found: list[tuple[Addr, int]] = []
    answered = False
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        query = dns.message.make_query(name, rdtype)
        for upstream in upstreams:
            try:
                reply = await dns.asyncquery.udp(query, upstream, timeout=QUERY_TIMEOUT)
            except (dns.exception.DNSException, OSError):
                continue
            if reply.rcode() == dns.rcode.NOERROR:
                answered = True
                found += addresses(reply.to_wire())
            break
    return found if answered and found else None
