"""The URLs a client on another machine uses: ``sandbox_url`` and exposed-port URLs
(issue 12, gap 5).

Tensorlake answers ``ingress_endpoint`` (a base URL) beside ``sandbox_url`` in the
create, get, list and copy responses; its SDK turns it into ``{port}-{id}.{host}``
(``SandboxInfo.url_for_port``). We answer it whenever a public proxy domain is
configured (``--proxy-domain``), plus ``port_urls`` (one URL per exposed port, for
curl and our own CLI). Without a domain there is no name a client could resolve for
``{port}-{id}``, so both are left out (``null`` / ``{}``): the proxy still routes
``Host: {port}-{id}.local`` on loopback.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..auth.tls import is_loopback

_UNSPECIFIED = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class PublicUrls:
    proxy_url: str  # sandbox_url of a running sandbox
    ingress_endpoint: str | None = None  # base of {port}-{id}.{domain}; None: no domain

    def port_url(self, ref: str, port: int) -> str | None:
        if self.ingress_endpoint is None:
            return None
        parts = urlsplit(self.ingress_endpoint)
        netloc = f"{port}-{ref}.{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return f"{parts.scheme}://{netloc}"


def of(service: Any) -> PublicUrls:
    """A service's public URLs (``proxy_url`` and, with a proxy domain, the
    ``ingress_endpoint`` the server set on it)."""
    return PublicUrls(service.proxy_url, getattr(service, "ingress_endpoint", None))


def _netloc(host: str, port: int, scheme: str) -> str:
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return host if port == default else f"{host}:{port}"


def resolve(*, host: str, proxy_port: int, tls: bool, public_proxy_url: str | None,
            proxy_domain: str | None) -> PublicUrls:
    """From the server's options. ``public_proxy_url`` wins for ``sandbox_url``; then the
    proxy domain; then the listen address (loopback: ``localhost``, which the SDKs route
    with ``Host: {id}.local``; unspecified ``0.0.0.0``: this machine's name, never the
    unroutable ``0.0.0.0`` a remote client cannot connect to)."""
    scheme = "https" if tls else "http"
    if public_proxy_url:
        proxy_url = public_proxy_url.rstrip("/")
    elif proxy_domain:
        proxy_url = f"{scheme}://{_netloc(proxy_domain, proxy_port, scheme)}"
    elif is_loopback(host):
        proxy_url = f"{scheme}://localhost:{proxy_port}"
    else:
        name = socket.getfqdn() if host in _UNSPECIFIED else host
        proxy_url = f"{scheme}://{_netloc(name, proxy_port, scheme)}"
    ingress = None
    if proxy_domain:
        base = urlsplit(proxy_url)
        port = base.port or (443 if base.scheme == "https" else 80)
        ingress = f"{base.scheme}://{_netloc(proxy_domain, port, base.scheme)}"
    return PublicUrls(proxy_url, ingress)
