"""Process entry point, tuned for start-up latency.

Sandbox creation waits for the agent to answer, so start-up matters.  On the
development VM (2 vCPU, noisy) a bare ``python -S -E`` costs ~10 ms, ``import
asyncio`` alone 35-50 ms, h11 7-12 ms and the agent's own modules 4-6 ms.  The
asyncio import is the floor for an asyncio agent.  Three things keep the
sandbox-visible latency low:

1. The listening socket is created with the C-level ``_socket`` module
   *before* asyncio is imported.  From then on the kernel completes TCP
   handshakes into the backlog, so a client that connects early is simply
   served a little later instead of getting ECONNREFUSED and sleeping in a
   retry back-off.
2. Nothing that is not needed to serve the first request is imported: no
   argparse/logging config/urllib/shutil/ctypes on the start-up path (they are
   hand-rolled or imported lazily), and ``ssl`` is blocked (the agent speaks
   plain HTTP behind the proxy; asyncio treats a missing ``ssl`` as optional).
3. ``bundle.py`` ships byte-compiled modules, so a read-only bind mount never
   compiles sources on the hot path.

Measured with ``startup_bench`` (30 runs each, from fork/exec):
  Debian python3.11 (3.11.2): port accepts after ~17 ms median, first
  ``/api/v1/health`` answered after ~53-59 ms median (min ~44 ms);
  pyenv 3.11.7: ~23 ms / ~73 ms median (min ~56 ms).

Run ``python -m cellbox.agent.startup_bench`` to measure both "port accepts
connections" and "first /api/v1/health answered".
"""

from __future__ import annotations

import sys
import time


def _listen(host: str, port: int) -> int:
    """Bind + listen with ``_socket`` (no ``socket``/``enum`` import yet); returns the fd."""
    import _socket

    # bytes host: a str would pull in the idna codec (~4 ms) just to encode "0.0.0.0"
    node: str | bytes = host.encode("ascii") if host.isascii() else host
    infos = _socket.getaddrinfo(node, port, 0, _socket.SOCK_STREAM, 0, _socket.AI_PASSIVE)
    family, type_, proto, _, addr = infos[0]
    sock = _socket.socket(family, type_, proto)  # created close-on-exec
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if family == _socket.AF_INET6:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock.detach()


def main(argv: list[str] | None = None) -> None:
    t0 = time.perf_counter()
    from .config import USAGE, UsageError, parse_args

    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        sys.stderr.write((f"error: {exc}\n" if str(exc) else "") + USAGE)
        sys.exit(2 if str(exc) else 0)
    try:
        fd = _listen(cfg.host, cfg.port)
    except OSError as exc:
        sys.stderr.write(f"cellbox-agent: cannot listen on {cfg.host}:{cfg.port}: {exc}\n")
        sys.exit(1)

    if "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # never needed; saves ~7 ms

    import asyncio

    from .app import serve
    from .util import set_quiet

    set_quiet(cfg.quiet)
    sys.exit(asyncio.run(serve(cfg, fd, t0)))
