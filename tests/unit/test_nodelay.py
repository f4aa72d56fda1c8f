"""The API's connections have Nagle off.

The API's listening socket was made with ``proto`` 0, so asyncio did not set
TCP_NODELAY on the connections it accepted; uvicorn writes a response's head and body
separately, and on a keep-alive connection the body then waited for the client's
delayed ACK: ~40 ms on every request after the first (GET /images 48 ms, against 7 ms
with a new connection per request). Checked on the socket itself, not by timing.
"""

from __future__ import annotations

import asyncio
import socket

from cellbox.server import _bind
from cellbox.sdk._backend_sync import listen


def test_connections_the_api_accepts_have_nagle_off() -> None:
    async def run() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = _bind("127.0.0.1", 0)
        server = await asyncio.start_server(on_client, sock=listener)  # as uvicorn serves it
        try:
            _, writer = await asyncio.open_connection(*listener.getsockname())
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(run()) != 0


def test_the_sdk_tunnel_listener_accepts_with_nagle_off() -> None:
    lst = listen("127.0.0.1", 0)
    try:
        client = socket.create_connection(lst._sock.getsockname())
        conn, _ = lst._sock.accept()
        try:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            conn.close()
            client.close()
    finally:
        lst.close()
