"""The client side of the proxy: one accepted keep-alive connection (h11 ``SERVER``).

This module only reads requests, writes responses and notices a client going away;
what to do with each request is ``exchange.py``'s job. A client connection is never
tied to a sandbox: every request on it is routed on its own (the Rust SDK pools
connections to ``localhost:9443`` and mixes sandboxes on one of them).

Timeouts use ``asyncio.timeout``, never ``asyncio.wait_for``: on Python 3.11,
``wait_for`` swallows a cancellation that lands as the read completes (CPython
gh-86296); a cancelled body reader then kept reading into the next request and
hung the connection (seen in ``test_agent_answer_before_body_is_read``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11

from .. import observe

from .errors import ProxyError

READ_CHUNK = 256 * 1024
MAX_HEAD = 64 * 1024  # request line + headers; beyond this h11 reports 431
IDLE_TIMEOUT = 120.0  # > hyper/reqwest's 90 s pool idle timeout, so clients close first
STALL_TIMEOUT = 300.0  # a request head or body that stalls this long is abandoned
MAX_PIPELINED = 1 << 20  # bytes read ahead while a response is in flight
LINGER_BYTES = 64 << 20
LINGER_SECONDS = 2.0


class ClientGone(Exception):
    """The client closed, reset or stalled its connection, or broke HTTP mid-body.

    ``answer`` is set when the client deserves a reply (a malformed body), sent if
    the response has not started yet.
    """

    def __init__(self, detail: str, answer: ProxyError | None = None) -> None:
        super().__init__(detail)
        self.answer = answer


class ClientConnection:
    """Reader/writer pair of one client plus its h11 state."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        peer = writer.get_extra_info("peername")
        self.peer_ip: str = peer[0] if isinstance(peer, tuple) else "unknown"
        self.broken = False  # a response broke off: close with RST, not FIN

    # ------------------------------------------------------------------ reading
    async def _read(self, timeout: float) -> bytes:
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see module docstring
                return await self.reader.read(READ_CHUNK)
        except (ConnectionError, OSError, TimeoutError) as exc:
            raise ClientGone(f"client connection lost: {exc!r}") from None

    async def next_request(self) -> h11.Request | None:
        """The next request, or None once the client has closed the connection.

        ``h11.RemoteProtocolError`` (malformed request, oversized head) propagates.
        """
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                idle = self.h11.their_state is h11.IDLE and not self.h11.trailing_data[0]
                self.h11.receive_data(await self._read(IDLE_TIMEOUT if idle else STALL_TIMEOUT))
                continue
            return event if isinstance(event, h11.Request) else None

    async def next_body_event(self) -> h11.Data | h11.EndOfMessage:
        """The next piece of the request body."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise ClientGone("malformed request body", ProxyError(400, "BAD_REQUEST", f"bad request body: {exc}")) from None
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self._read(STALL_TIMEOUT))
            elif isinstance(event, (h11.Data, h11.EndOfMessage)):
                return event
            else:
                raise ClientGone("client closed the connection during the request body")

    async def watch(self) -> None:
        """After the request: read on, so a disconnect is seen while the response runs.

        Raises ``ClientGone`` on EOF. Bytes the client sends meanwhile are its next
        (pipelined) request or, after a 101, its first frames: h11 buffers them.
        """
        buffered = 0
        while buffered < MAX_PIPELINED:
            try:
                data = await self.reader.read(READ_CHUNK)
            except (ConnectionError, OSError) as exc:
                raise ClientGone(f"client connection lost: {exc!r}") from None
            if not data:
                raise ClientGone("client closed the connection")
            buffered += len(data)
            self.h11.receive_data(data)
        await asyncio.get_running_loop().create_future()  # stop reading; TCP pushes back

    def consume_buffered_body(self) -> None:
        """Finish the request body if it is already fully read (no I/O)."""
        while self.h11.their_state is h11.SEND_BODY:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                return
            if not isinstance(event, (h11.Data, h11.EndOfMessage)):
                return

    # ------------------------------------------------------------------ writing
    def can_respond(self) -> bool:
        """True while no response head has been sent for the current request."""
        return self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    async def send(self, *events: Any) -> None:
        """Write events and wait for the socket to take them (back-pressure)."""
        for event in events:
            data = self.h11.send(event)
            if data:
                self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ClientGone(f"client connection lost: {exc!r}") from None

    async def send_error(self, err: ProxyError, *, close: bool = False) -> None:
        """Answer with ``{"error", "code"}``; ``Connection: close`` if the body is unread
        or ``close`` says the connection must end (its framing cannot be trusted)."""
        observe.count("proxy_error", str(err.status))  # metrics hook (cellbox/metrics)
        if not close:
            self.consume_buffered_body()
        body = err.body()
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        if close or self.h11.their_state is not h11.DONE:
            headers.append(("connection", "close"))
        await self.send(h11.Response(status_code=err.status, headers=headers), h11.Data(data=body), h11.EndOfMessage())

    async def send_protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        """400 (or h11's hint, e.g. 431) for a request h11 could not parse; then close."""
        code = "HEADER_TOO_LARGE" if exc.error_status_hint == 431 else "BAD_REQUEST"
        err = ProxyError(exc.error_status_hint, code, f"bad request: {exc}")
        body = err.body()
        head = (
            f"HTTP/1.1 {err.status} {'Request Header Fields Too Large' if err.status == 431 else 'Bad Request'}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        # h11 is in ERROR state now and will not serialize; the answer is fixed text.
        self.writer.write(head.encode() + body)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass

    # ------------------------------------------------------------------ closing
    async def linger(self) -> None:
        """Swallow an unread request body for a moment before closing.

        Closing a socket with unread input makes the kernel send RST, which can
        destroy the answer just written before the client has read it.
        """
        try:
            self.writer.write_eof()
        except (OSError, RuntimeError):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        swallowed = 0
        try:
            while swallowed < LINGER_BYTES and (remaining := deadline - loop.time()) > 0:
                async with asyncio.timeout(remaining):
                    data = await self.reader.read(READ_CHUNK)
                if not data:
                    return
                swallowed += len(data)
        except (TimeoutError, ConnectionError, OSError):
            return

    def close(self, abort: bool = False) -> None:
        if abort:
            self.writer.transport.abort()
        else:
            self.writer.close()
