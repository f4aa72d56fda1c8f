"""Header rewriting between client and upstream (RFC 9110 §7.6.1), no I/O.

Hop-by-hop headers describe one TCP connection, so they are dropped on each side and
the proxy frames both connections itself: h11 re-adds ``Transfer-Encoding`` where
needed, ``Content-Length`` is end-to-end and kept (downloads keep their size). An
upgrade is the exception: ``Connection: upgrade`` + ``Upgrade`` are passed on, since
the handshake must reach the agent and its 101 must reach the client.
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def _tokens(headers: Headers, name: bytes) -> set[bytes]:
    found: set[bytes] = set()
    for key, value in headers:
        if key == name:
            found.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return found


def _value(headers: Headers, name: bytes) -> bytes | None:
    return next((v for k, v in headers if k == name), None)


def _end_to_end(headers: Headers) -> Headers:
    """Drop hop-by-hop headers and any header the ``Connection`` header names."""
    drop = HOP_BY_HOP | _tokens(headers, b"connection")
    return [(k, v) for k, v in headers if k not in drop]


def upgrade_of(headers: Headers) -> bytes | None:
    """The protocol asked for, if this is an upgrade request (``Connection: upgrade``)."""
    if b"upgrade" not in _tokens(headers, b"connection"):
        return None
    return _value(headers, b"upgrade")


def value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lowercase), if any."""
    return _value(headers, name)


def upstream_request(headers: Headers, peer_ip: str, keep_alive: bool, drop_api_key: bool = False) -> Headers:
    """Request headers for the agent: end-to-end ones, framing, upgrade, X-Forwarded-For.

    ``Host`` passes unchanged. With ``drop_api_key`` an ``Authorization`` carrying a
    cellbox key is removed: code in the sandbox (an exposed port, a process reading
    the agent's traffic) must never see the caller's key; any other Authorization
    (the sandbox app's own scheme) passes.
    """
    out = _end_to_end(headers)
    if drop_api_key:
        out = [(k, v) for k, v in out if not (k == b"authorization" and b"cbx_" in v)]
    if b"chunked" in _tokens(headers, b"transfer-encoding"):
        out.append((b"transfer-encoding", b"chunked"))
    upgrade = upgrade_of(headers)
    if upgrade is not None:
        out += [(b"connection", b"upgrade"), (b"upgrade", upgrade)]
    elif not keep_alive:
        out.append((b"connection", b"close"))
    forwarded = [v for k, v in out if k == b"x-forwarded-for"]
    out = [(k, v) for k, v in out if k != b"x-forwarded-for"]
    out.append((b"x-forwarded-for", b", ".join([*forwarded, peer_ip.encode("ascii", "replace")])))
    if _value(out, b"host") is None:  # HTTP/1.0 clients may omit it; h11 needs one upstream
        out.append((b"host", b"sandbox"))
    return out


# The agent's proof of identity is for the proxy only (agent/auth.py).
_PRIVATE = frozenset({b"x-cellbox-auth"})


def client_response(headers: Headers, switching: bool = False) -> Headers:
    """Response headers for the client; a 101 keeps its ``Connection``/``Upgrade`` pair."""
    out = [(k, v) for k, v in _end_to_end(headers) if k not in _PRIVATE]
    if switching:
        upgrade = _value(headers, b"upgrade")
        out.append((b"connection", b"upgrade"))
        if upgrade is not None:
            out.append((b"upgrade", upgrade))
    return out
