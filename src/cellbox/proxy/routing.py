"""Which sandbox and port a request is for, from its headers alone (no I/O).

Spec §1.4/§3.5, in order:

* ``Host: {id-or-name}.local[:port]``     -> the sandbox's agent, port 9501
* ``Host: {port}-{id-or-name}.local``     -> user port ``{port}`` of that sandbox
* ``Host: {port}-{id}.{domain}`` / ``{id}.{domain}`` likewise, for the configured
  public proxy domain (remote use: ``--proxy-domain``)
* ``X-Tensorlake-Sandbox-Id: {id-or-name}`` (+ ``X-Tensorlake-Sandbox-Port``, default
  9501), with any Host                     -> as given
* ``E2b-Sandbox-Id`` / ``E2b-Sandbox-Port``: the same, as the E2B SDK sends them when
  ``E2B_SANDBOX_URL`` names this proxy (cellbox/e2b/)

The ``{port}-`` prefix cannot be mistaken for a reference: names start with a letter
and IDs contain no ``-`` (``cellbox.ids``). Whether a user port may be reached is not
decided here: the resolver knows the sandbox's ``exposed_ports``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ProxyError, missing_target

AGENT_PORT = 9501
LOCAL_SUFFIX = ".local"
SANDBOX_ID_HEADER = b"x-tensorlake-sandbox-id"
SANDBOX_PORT_HEADER = b"x-tensorlake-sandbox-port"
# E2B's names for the same two headers (cellbox/e2b/: the E2B SDK's envd traffic).
E2B_ID_HEADER = b"e2b-sandbox-id"
E2B_PORT_HEADER = b"e2b-sandbox-port"

_PORT_PREFIX = re.compile(r"^(\d{1,5})-(.+)$")


@dataclass(frozen=True, slots=True)
class Target:
    """A sandbox reference (ID or name, not yet resolved) and the port wanted in it."""

    ref: str
    port: int


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ProxyError(400, "INVALID_SANDBOX_PORT", f"invalid sandbox port {text!r}")
    return int(text)


def _host_name(host: str) -> str:
    """``Host`` without its port, lowercased (``[v6]:port`` and bare v6 too)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def _from_host(host: str, domain: str | None = None) -> Target | None:
    name = _host_name(host)
    suffixes = (LOCAL_SUFFIX, f".{domain.lower()}") if domain else (LOCAL_SUFFIX,)
    suffix = next((s for s in suffixes if name.endswith(s) and len(name) > len(s)), None)
    if suffix is None:
        return None
    label = name[: -len(suffix)]
    match = _PORT_PREFIX.match(label)
    if match:
        return Target(match.group(2), _port(match.group(1)))
    return Target(label, AGENT_PORT)


def refuse_ambiguous(target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse a request that two parsers could read two ways (a 400, then the
    connection closes, since its framing cannot be trusted).

    * An absolute-form target (``GET http://other.local/ …``) names a host of its own;
      RFC 9112 says it overrides ``Host``, our routing reads ``Host``. We are not a
      forward proxy, so only origin-form (``/…``) and ``*`` are served.
    * ``Content-Length`` together with ``Transfer-Encoding``: h11 frames by the latter,
      a load balancer in front of us might frame by the former, and the bytes between
      the two ends would be a request smuggled past it (RFC 9112 §6.1 allows a server
      to reject it; we do).
    """
    if not (target.startswith(b"/") or target == b"*"):
        raise ProxyError(400, "INVALID_REQUEST_TARGET", "only origin-form request targets (/path) are served")
    names = {name for name, _ in headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        raise ProxyError(400, "AMBIGUOUS_FRAMING", "Content-Length and Transfer-Encoding together are refused")


def target_of(headers: list[tuple[bytes, bytes]], domain: str | None = None) -> Target:
    """The target of a request, given its (h11-lowercased) headers.

    Raises ``ProxyError`` 400 when no target is named or a port is not a port.
    """
    host = ref = port = None
    for name, value in headers:
        if name == b"host" and host is None:
            host = value.decode("latin-1")
        elif name in (SANDBOX_ID_HEADER, E2B_ID_HEADER) and ref is None:
            ref = value.decode("latin-1").strip()
        elif name in (SANDBOX_PORT_HEADER, E2B_PORT_HEADER) and port is None:
            port = value.decode("latin-1").strip()
    if host is not None:
        target = _from_host(host, domain)
        if target is not None:
            return target
    if not ref:
        raise missing_target()
    return Target(ref, AGENT_PORT if port is None else _port(port))
