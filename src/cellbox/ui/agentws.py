"""A WebSocket to a sandbox agent's PTY, opened by the host (wsproto over asyncio streams).

The agent must prove itself in its 101 answer (``x-cellbox-auth`` for our nonce), as
for every call the host makes (``manager/agent_client.py``); a tenant that replaced
its agent cannot pose as it. Small on purpose: one reader task, writes under a lock.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping, RejectConnection,
                            Request, TextMessage)

from ..agent import auth
from ..errors import CellboxError
from ..manager import agent_client

CONNECT_TIMEOUT = 10.0


class AgentSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.lock = asyncio.Lock()
        self.partial = bytearray()

    @classmethod
    async def open(cls, ip: str, port: int, key: bytes | None, pty_id: str, token: str) -> AgentSocket:
        nonce = agent_client.new_nonce()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(ip, port)
            sock = cls(reader, writer)
            try:
                headers = [(auth.NONCE_HEADER.encode(), nonce.encode()), (b"x-pty-token", token.encode())]
                writer.write(sock.conn.send(Request(host=f"{ip}:{port}", target=f"/api/v1/pty/{quote(pty_id)}/ws",
                                                    extra_headers=headers)))
                while True:
                    data = await reader.read(65536)
                    if not data:
                        raise CellboxError("the sandbox's agent closed the terminal connection", code="PTY_GONE")
                    sock.conn.receive_data(data)
                    for event in sock.conn.events():
                        if isinstance(event, AcceptConnection):
                            heads = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.extra_headers}
                            if not agent_client.verify(key, nonce, heads):
                                raise agent_client.AgentError("the sandbox's agent failed authentication",
                                                              code="AGENT_NOT_AUTHENTIC")
                            return sock
                        if isinstance(event, RejectConnection):
                            raise CellboxError(f"the agent refused the terminal ({event.status_code})",
                                               code="PTY_REFUSED")
            except BaseException:
                writer.close()
                raise

    async def recv(self) -> bytes | None:
        """The next whole binary message; None once closed."""
        while True:
            for event in self.conn.events():
                if isinstance(event, (BytesMessage, TextMessage)):
                    part = event.data.encode() if isinstance(event, TextMessage) else event.data
                    self.partial += part
                    if event.message_finished:
                        out = bytes(self.partial)
                        self.partial.clear()
                        return out
                elif isinstance(event, Ping):
                    await self._write(self.conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self.conn.state is ConnectionState.REMOTE_CLOSING:
                        await self._write(self.conn.send(event.response()))
                    return None
            data = await self.reader.read(65536)
            if not data:
                return None
            self.conn.receive_data(data)

    async def send(self, data: bytes) -> None:
        if self.conn.state is ConnectionState.OPEN:
            await self._write(self.conn.send(Message(data=data)))

    async def _write(self, data: bytes) -> None:
        async with self.lock:
            self.writer.write(data)
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()
