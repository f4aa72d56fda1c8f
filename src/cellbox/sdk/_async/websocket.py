"""A small binary WebSocket client (wsproto over a raw connection) for PTYs and tunnels.

One reader at a time calls ``recv``; ``send`` may be called concurrently from another
task (or thread, in the sync flavour): every use of the protocol state and every write
happens under one lock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from .._backend_async import Lock, Stream, connect_tcp
from .._errors import SandboxConnectionError, WaitTimeout, error_from_response, map_transport_errors
from .._shared import ProxyTarget

READ_SIZE = 65536


class AsyncWebSocket:
    """A connected WebSocket; ``recv`` returns None once the connection has closed."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._conn = WSConnection(ConnectionType.CLIENT)
        self._lock = Lock()
        self._messages: deque[bytes] = deque()
        self._partial = bytearray()
        self._accepted = False
        self._reject_status: int | None = None
        self._reject_body = bytearray()
        self.closed = False
        self.close_code: int | None = None
        self.close_reason: str | None = None

    @classmethod
    async def connect(
        cls, target: ProxyTarget, path: str, headers: dict[str, str] | None = None, timeout: float = 30.0
    ) -> AsyncWebSocket:
        """Open ``path`` on the sandbox proxy, with the sandbox's routing headers."""
        host, port, tls = target.address()
        with map_transport_errors(f"WebSocket connection to {host}:{port}"):
            stream = await connect_tcp(host, port, tls=tls, timeout=timeout)
        ws = cls(stream)
        try:
            await ws._handshake(target, path, headers or {}, timeout)
        except BaseException:
            await stream.close()
            raise
        return ws

    async def _handshake(self, target: ProxyTarget, path: str, headers: dict[str, str], timeout: float) -> None:
        extra = [(k.encode(), v.encode()) for k, v in {**target.headers, **headers}.items() if k.lower() != "host"]
        request = Request(host=target.host_header, target=path, extra_headers=extra)
        with map_transport_errors(f"WebSocket handshake for {path}"):
            await self._stream.write(self._conn.send(request))
            while not self._accepted:
                data = await self._stream.read(READ_SIZE, timeout)
                if not data:
                    if self._reject_status is not None:
                        raise error_from_response(self._reject_status, bytes(self._reject_body))
                    raise SandboxConnectionError(f"WebSocket handshake for {path}: connection closed")
                async with self._lock:
                    replies = self._receive(data)
                    for reply in replies:
                        await self._stream.write(self._conn.send(reply))

    def _receive(self, data: bytes) -> list[Any]:
        """Feed bytes to the protocol; queue messages; return the events we must answer."""
        self._conn.receive_data(data)
        replies: list[Any] = []
        for event in self._conn.events():
            if isinstance(event, AcceptConnection):
                self._accepted = True
            elif isinstance(event, RejectConnection):
                self._reject_status = event.status_code
                if not event.has_body:
                    raise error_from_response(event.status_code, b"")
            elif isinstance(event, RejectData):
                self._reject_body += event.data
                if event.body_finished:
                    raise error_from_response(self._reject_status or 400, bytes(self._reject_body))
            elif isinstance(event, (BytesMessage, TextMessage)):
                data_part = event.data.encode() if isinstance(event, TextMessage) else event.data
                self._partial += data_part
                if event.message_finished:
                    self._messages.append(bytes(self._partial))
                    self._partial.clear()
            elif isinstance(event, Ping):
                replies.append(event.response())
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason
                self.closed = True
                if self._conn.state is ConnectionState.REMOTE_CLOSING:
                    replies.append(event.response())
        return replies

    async def recv(self, timeout: float | None = None) -> bytes | None:
        """The next binary message, or None when the connection is closed.

        With ``timeout``, :class:`WaitTimeout` if nothing arrives for that long (the
        connection stays usable).
        """
        while not self._messages:
            if self.closed:
                await self._stream.close()
                return None
            try:
                data = await self._stream.read(READ_SIZE, timeout)
            except TimeoutError:
                raise WaitTimeout(f"nothing received in {timeout:g}s") from None
            except OSError:
                data = b""
            if not data:
                self.closed = True
                if self.close_code is None:
                    self.close_code = 1006
                continue
            async with self._lock:
                replies = self._receive(data)
                for reply in replies:
                    try:
                        await self._stream.write(self._conn.send(reply))
                    except OSError:
                        pass
        return self._messages.popleft()

    async def send(self, data: bytes) -> None:
        """Send one binary message."""
        async with self._lock:
            if self.closed or self._conn.state is not ConnectionState.OPEN:
                raise SandboxConnectionError("WebSocket is closed")
            with map_transport_errors("WebSocket send"):
                await self._stream.write(self._conn.send(Message(data=data)))

    async def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; keep reading with ``recv`` until it returns None."""
        async with self._lock:
            if self._conn.state is ConnectionState.OPEN:
                try:
                    await self._stream.write(self._conn.send(CloseConnection(code=code, reason=reason)))
                except OSError:
                    pass

    async def close(self) -> None:
        """Say goodbye (best effort) and drop the connection."""
        await self.send_close()
        self.closed = True
        await self._stream.close()
