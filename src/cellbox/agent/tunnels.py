"""``GET /api/v1/tunnels/tcp?port=N``: one WebSocket per TCP connection (spec section 3.4).

The agent connects to ``127.0.0.1:N`` *before* accepting the upgrade, so
"nothing listens" is a plain 502 JSON error (400 ``INVALID_PORT`` for a bad
port, 426 if the request is not a WebSocket upgrade).  Then bytes are relayed
verbatim: each binary message (or fragment of one) is written to the TCP
socket, each TCP read (<= 64 KiB) becomes one binary message.  Text messages
close the tunnel with 1003.  WebSocket has no half-close, so either side
ending ends both: upstream EOF -> close 1000; client close -> TCP closed.

The upstream socket is connected with ``loop.sock_connect`` on a numeric
address (no ``getaddrinfo``, which asyncio runs in a thread pool: the agent
forks children and must stay single-threaded).

Imported lazily on the first tunnel request.
"""

from __future__ import annotations

import asyncio
import socket

from .errors import APIError, bad_request
from .server import Request, Upgrade
from .ws import MAX_FRAME, NORMAL, UNSUPPORTED_DATA, WebSocket, handshake_headers

CONNECT_TIMEOUT = 5.0
HOST = "127.0.0.1"


class TunnelAPI:
    async def tcp(self, request: Request) -> Upgrade:
        raw = request.query("port") or ""
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise bad_request(f"query parameter 'port' must be an integer 1-65535, got {raw!r}", "INVALID_PORT")
        port = int(raw)
        headers = handshake_headers(request)
        sock = await connect(port)

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trailing: bytes) -> None:
            await relay(WebSocket(reader, writer, trailing), sock)

        return Upgrade(headers, run, on_abandon=sock.close)


async def connect(port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A connected non-blocking socket to 127.0.0.1:port, or 502."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (HOST, port)), timeout)
    except (OSError, TimeoutError) as exc:
        sock.close()
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise APIError(502, "CONNECTION_FAILED", f"cannot connect to {HOST}:{port}: {reason}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def relay(ws: WebSocket, sock: socket.socket) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(sock=sock, limit=MAX_FRAME)
    except BaseException:
        sock.close()
        ws.abort()
        raise

    async def client_to_upstream() -> None:
        while True:
            msg = await ws.receive()
            if msg is None:
                return
            if not isinstance(msg.data, (bytes, bytearray)):
                await ws.close(UNSUPPORTED_DATA, "tunnels carry binary frames only")
                return
            if msg.data:
                up_writer.write(msg.data)
                await up_writer.drain()

    async def upstream_to_client() -> None:
        while True:
            data = await up_reader.read(MAX_FRAME)
            if not data:
                return
            await ws.send(data)

    down = asyncio.ensure_future(client_to_upstream())
    up = asyncio.ensure_future(upstream_to_client())
    try:
        await asyncio.wait((down, up), return_when=asyncio.FIRST_COMPLETED)
        if up.done() and not down.done():  # upstream closed (or failed): say goodbye
            if ws.open:
                await ws.close(NORMAL, "upstream closed")
            await asyncio.wait((down,), timeout=0.5)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
        up_writer.close()
        if ws.open:
            ws.abort()
