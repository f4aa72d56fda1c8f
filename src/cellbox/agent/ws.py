"""WebSocket (RFC 6455) server side, on a socket taken over from ``server.py``.

The HTTP layer parses the upgrade request with h11 and, when a handler returns
``server.Upgrade(handshake_headers(request), run)``, sends the 101 and hands
the raw streams to ``run``; from then on this module speaks WebSocket frames
with wsproto's low-level ``Connection`` (the handshake is already done, so the
h11-based handshake half of wsproto is not used).

One coroutine reads (``receive``); any coroutine may ``send``/``close``.  Every
frame is written with a single ``transport.write`` so concurrent writers never
interleave inside a frame.  Pings are answered inside ``receive``.  A keep-alive
task pings the peer every ``PING_INTERVAL`` seconds and aborts the connection
if nothing at all arrived for ``dead_after`` (default ``2 * PING_INTERVAL + 5``)
seconds while a reader was waiting: a dead peer would otherwise pin a PTY's
output behind a full socket until TCP gives up, which can take many minutes.

Imported lazily (first WebSocket request): wsproto costs ~5 ms of imports
that the sandbox-creation hot path never needs.
"""

from __future__ import annotations

import asyncio
from collections import deque

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from .errors import APIError
from .server import Headers, Request

PING_INTERVAL = 30.0
MAX_FRAME = 64 * 1024  # largest message payload we send, and PTY input we accept
READ_CHUNK = 64 * 1024
CLOSE_WAIT = 2.0  # how long close() waits for the peer's close frame

# close codes
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009

Message = BytesMessage | TextMessage


def handshake_headers(request: Request) -> Headers:
    """Validate a WebSocket upgrade request; return the 101 response headers."""
    upgrade = request.headers.get("upgrade", "")
    if "websocket" not in upgrade.lower():
        raise APIError(426, "UPGRADE_REQUIRED", "this endpoint needs a WebSocket upgrade (Upgrade: websocket)")
    key = request.headers.get("sec-websocket-key", "").strip()
    if not key:
        raise APIError(400, "INVALID_REQUEST", "missing Sec-WebSocket-Key header")
    if request.headers.get("sec-websocket-version", "13").strip() != "13":
        raise APIError(426, "UPGRADE_REQUIRED", "only WebSocket version 13 is supported")
    accept = generate_accept_token(key.encode("latin-1")).decode("ascii")
    return [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)]


class WebSocket:
    """A server-side WebSocket over asyncio streams (no extensions)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        trailing: bytes = b"",
        *,
        ping_interval: float | None = PING_INTERVAL,
        dead_after: float | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        self._writer = writer
        self._conn = Connection(ConnectionType.SERVER, trailing_data=trailing)
        self._events: deque[Event] = deque(self._conn.events())
        self._reading = False
        self._done = asyncio.Event()  # closing handshake over or connection lost
        self._last_seen = self._loop.time()
        self.close_code: int | None = None  # what the peer closed with (1006 = vanished)
        self._keepalive: asyncio.Task[None] | None = None
        if ping_interval:
            limit = dead_after if dead_after is not None else 2 * ping_interval + 5
            self._keepalive = asyncio.ensure_future(self._ping_loop(ping_interval, limit))

    @property
    def open(self) -> bool:
        """True while messages may still be sent."""
        return self._conn.state is ConnectionState.OPEN and not self._done.is_set()

    # ------------------------------------------------------------ receiving
    async def receive(self) -> Message | None:
        """Next data message (or message fragment); None once the connection is over.

        Large messages arrive in pieces: check ``message_finished``.
        """
        self._reading = True
        try:
            while True:
                while self._events:
                    event = self._events.popleft()
                    if isinstance(event, (BytesMessage, TextMessage)):
                        if self._conn.state is ConnectionState.OPEN:
                            return event
                    elif isinstance(event, Ping):
                        if self._conn.state is ConnectionState.OPEN:
                            self._write(self._conn.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self._on_close_frame(event)
                        return None
                if self._done.is_set():
                    return None
                try:
                    data = await self._reader.read(READ_CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    if self.close_code is None:
                        self.close_code = 1006
                    self._finish()
                    return None
                self._last_seen = self._loop.time()
                self._conn.receive_data(data)
                self._events.extend(self._conn.events())
        finally:
            self._reading = False

    def _on_close_frame(self, event: CloseConnection) -> None:
        if self.close_code is None:
            self.close_code = event.code
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING:
            self._write(self._conn.send(event.response()))
        elif state is ConnectionState.OPEN:  # a protocol error detected by wsproto
            self._write(self._conn.send(CloseConnection(code=event.code, reason=event.reason)))
        self._finish()

    # -------------------------------------------------------------- sending
    async def send(self, payload: bytes) -> None:
        """Send one binary message (callers keep it <= ``MAX_FRAME``)."""
        if not self.open:
            raise ConnectionResetError("websocket is closed")
        self._write(self._conn.send(BytesMessage(data=payload)))
        await self._writer.drain()

    def send_nowait(self, payload: bytes) -> bool:
        """Queue one binary message without waiting for the socket; False if closed."""
        if not self.open:
            return False
        self._write(self._conn.send(BytesMessage(data=payload)))
        return True

    async def drain(self) -> None:
        await self._writer.drain()

    async def close(self, code: int = NORMAL, reason: str = "", wait: float = CLOSE_WAIT) -> None:
        """Send a close frame, wait (bounded) for the peer's, then drop the socket."""
        if self._conn.state is ConnectionState.OPEN and not self._done.is_set():
            self._write(self._conn.send(CloseConnection(code=code, reason=reason)))
            try:
                await asyncio.wait_for(self._writer.drain(), wait)
            except (ConnectionError, OSError, TimeoutError):
                self._finish()
        deadline = self._loop.time() + wait
        try:
            if self._reading:  # another coroutine reads: it will see the reply
                await asyncio.wait_for(self._done.wait(), wait)
            else:
                while not self._done.is_set():
                    remaining = deadline - self._loop.time()
                    if remaining <= 0:
                        break
                    await asyncio.wait_for(self.receive(), remaining)
        except TimeoutError:
            pass
        self._finish()

    def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        if self.close_code is None:
            self.close_code = 1006
        self._finish()
        self._writer.transport.abort()

    async def wait_closed(self) -> None:
        await self._done.wait()

    # ------------------------------------------------------------- internal
    def _write(self, data: bytes) -> None:
        if data and not self._writer.is_closing():
            self._writer.write(data)

    def _finish(self) -> None:
        if self._done.is_set():
            return
        self._done.set()
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
        try:
            self._writer.close()  # flushes what is buffered, then closes
        except (ConnectionError, OSError, RuntimeError):
            pass

    async def _ping_loop(self, interval: float, dead_after: float) -> None:
        while not self._done.is_set():
            await asyncio.sleep(interval)
            if not self.open:
                return
            if self._reading and self._loop.time() - self._last_seen > dead_after:
                self.abort()  # dead peer: nothing arrived, not even a pong
                return
            self._write(self._conn.send(Ping(payload=b"cellbox")))
