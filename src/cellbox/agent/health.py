"""Health probes of managed processes: TCP connect or HTTP GET on 127.0.0.1.

``tcp``: healthy if a connection to the port is accepted within the timeout.
``http``: healthy if ``GET path`` answers with a 2xx or 3xx status line within
the timeout (only the status line is read; the body is ignored).  Probes use
numeric addresses and ``loop.sock_connect`` (no resolver thread).

Imported lazily by ``managed.py`` for processes that have a health check.
"""

from __future__ import annotations

import asyncio
import socket

HOST = "127.0.0.1"


async def probe(kind: str, port: int, path: str | None, timeout: float) -> str | None:
    """None if healthy, else a short reason."""
    try:
        return await asyncio.wait_for(_probe(kind, port, path or "/"), timeout)
    except TimeoutError:
        return f"timed out after {int(timeout * 1000)} ms"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


async def _probe(kind: str, port: int, path: str) -> str | None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (HOST, port))
        if kind == "tcp":
            return None
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "User-Agent: cellbox-agent-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode("latin-1", "replace"))
        head = b""
        while b"\n" not in head and len(head) < 4096:
            data = await loop.sock_recv(sock, 4096)
            if not data:
                break
            head += data
        parts = head.split(b"\n", 1)[0].split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return "no HTTP status line in the response"
        status = int(parts[1])
        return None if 200 <= status < 400 else f"HTTP status {status}"
    finally:
        sock.close()
