"""Minimal HTTP/1.1 server over h11 + asyncio streams.

Why hand-rolled over h11 instead of starlette/uvicorn/aiohttp:
  * Start-up time.  The agent starts on the sandbox-creation hot path; a
    framework stack costs 100+ ms of imports on this class of machine, while
    h11 is one small pure-Python package and the whole agent is a handful of
    modules (see ``main.py`` for the measured budget).
  * It must run in *any* rootfs: the agent is started with a bind-mounted host
    interpreter (``python -S -E``) and a bundled copy of this package plus
    h11/wsproto.  Pure-Python, sans-IO dependencies with no compiled parts
    and no entry points make that trivial.
  * The API needs precise control that frameworks hide: flush-per-event SSE,
    streaming request bodies of unbounded size straight to disk, and noticing a
    client that disconnects from an idle stream (so its process / follower can
    be cleaned up immediately instead of at the next write).

h11 does all the HTTP parsing/framing (keep-alive, pipelining, chunked and
Content-Length bodies, chunked responses); this module only moves bytes and
dispatches requests.  Handlers are ``async (Request) -> Response |
StreamingResponse | Upgrade`` and raise ``APIError`` for errors.  ``Upgrade``
(WebSocket: PTY, tunnels) makes the server send ``101 Switching Protocols`` via
h11 and hand the socket, plus bytes already read past the request, to the
handler's protocol code (``ws.py``); the HTTP connection ends with it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Awaitable, Callable

import h11

from .auth import NONCE_HEADER, AgentSecret
from .errors import APIError
from .util import log

MAX_JSON_BODY = 1 << 20  # JSON request bodies; file uploads are streamed and unbounded
READ_CHUNK = 256 * 1024
IDLE_TIMEOUT = 75.0  # keep-alive connections with no request in flight
BODY_TIMEOUT = 300.0  # a request body that stalls this long is abandoned
LINGER_BYTES = 64 << 20  # max unread request body we swallow before closing
LINGER_SECONDS = 2.0
_HEX = frozenset(b"0123456789abcdefABCDEF")

Headers = list[tuple[str, str]]


class Response:
    """A response with a complete in-memory body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, body: bytes = b"", headers: Headers | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []


class StreamingResponse:
    """A response whose body is produced by an async iterator.

    ``content_length`` None => chunked.  ``on_close`` is called exactly once when
    the response is over -- completed, failed, or the client went away -- even
    if the iterator never started (so it is the place to release fds or kill a
    process tied to the stream).
    """

    __slots__ = ("status", "headers", "chunks", "content_length", "on_close")

    def __init__(
        self,
        status: int,
        chunks: AsyncIterator[bytes],
        headers: Headers | None = None,
        content_length: int | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.status = status
        self.chunks = chunks
        self.headers = headers or []
        self.content_length = content_length
        self.on_close = on_close


class Upgrade:
    """Switch the connection to another protocol (``101 Switching Protocols``).

    After the 101 is sent, the server hands the raw streams plus any bytes
    that arrived after the request (``trailing``) to ``run`` and closes the
    connection when it returns.  ``on_abandon`` runs instead of ``run`` if the
    switch never happens (client gone, send failed) -- the place to release
    resources acquired before the switch, e.g. a tunnel's upstream socket.
    """

    __slots__ = ("headers", "run", "on_abandon")

    def __init__(
        self,
        headers: Headers,
        run: Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]],
        on_abandon: Callable[[], None] | None = None,
    ) -> None:
        self.headers = headers
        self.run = run
        self.on_abandon = on_abandon


AnyResponse = Response | StreamingResponse | Upgrade
Handler = Callable[["Request"], Awaitable[AnyResponse]]


def json_response(obj: Any, status: int = 200) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, [("Content-Type", "application/json")])


def error_response(err: APIError) -> Response:
    return json_response(err.body(), err.status)


def empty_response(status: int = 204) -> Response:
    return Response(status)


def percent_decode(text: str, plus: bool = False) -> str:
    """RFC 3986 percent-decoding to UTF-8 (surrogateescape for odd bytes).

    Hand-written instead of ``urllib.parse`` to save its import on start-up.
    """
    if plus:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    pieces = raw.split(b"%")
    out = bytearray(pieces[0])
    for piece in pieces[1:]:
        if len(piece) >= 2 and piece[0] in _HEX and piece[1] in _HEX:
            out.append(int(piece[:2], 16))
            out += piece[2:]
        else:
            out += b"%" + piece
    return out.decode("utf-8", "surrogateescape")


def parse_query(query: str) -> dict[str, str]:
    """Form-encoded query string -> first value per key."""
    result: dict[str, str] = {}
    for item in query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        result.setdefault(percent_decode(key, True), percent_decode(value, True))
    return result


class Request:
    """One parsed request; the body is pulled lazily from the connection."""

    __slots__ = ("method", "path", "raw_query", "headers", "params", "_conn", "_query", "_body_used")

    def __init__(self, conn: "HTTPConnection", event: h11.Request) -> None:
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        self.method: str = event.method.decode("ascii", "replace").upper()
        self.path: str = path
        self.raw_query: str = query
        self.headers: dict[str, str] = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        self.params: dict[str, str] = {}
        self._conn = conn
        self._query: dict[str, str] | None = None
        self._body_used = False

    def query(self, name: str) -> str | None:
        if self._query is None:
            self._query = parse_query(self.raw_query)
        return self._query.get(name)

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield the request body chunk by chunk (unbounded)."""
        if self._body_used:
            raise RuntimeError("request body already consumed")
        self._body_used = True
        async for chunk in self._conn.body_chunks():
            yield chunk

    async def body(self, limit: int = MAX_JSON_BODY) -> bytes:
        """The whole body; 413 if it exceeds ``limit``."""
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise APIError(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")
        buf = bytearray()
        async for chunk in self.stream():
            buf += chunk
            if len(buf) > limit:
                raise APIError(413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")
        return bytes(buf)

    async def json(self, limit: int = MAX_JSON_BODY) -> Any:
        raw = await self.body(limit)
        if not raw.strip():
            raise APIError(400, "INVALID_REQUEST", "a JSON request body is required")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, "INVALID_REQUEST", f"malformed JSON body: {exc}") from None


class HTTPConnection:
    """Drives one TCP connection: parse requests, dispatch, write responses."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dispatch: Handler,
        secret: AgentSecret | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._dispatch = dispatch
        self._secret = secret
        self._h11 = h11.Connection(h11.SERVER)
        self._peer_gone = False

    # ----------------------------------------------------------- reading
    async def _receive(self, timeout: float) -> None:
        data = await asyncio.wait_for(self._reader.read(READ_CHUNK), timeout)
        if not data:
            self._peer_gone = True
        self._h11.receive_data(data)

    async def _next_event(self) -> Any:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            idle = self._h11.their_state is h11.IDLE
            await self._receive(IDLE_TIMEOUT if idle else BODY_TIMEOUT)

    async def body_chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._h11.they_are_waiting_for_100_continue:
                self._writer.write(self._h11.send(h11.InformationalResponse(status_code=100, headers=[])))
            event = await self._next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:  # ConnectionClosed mid-body
                raise ConnectionResetError("client closed the connection during the request body")

    def _consume_buffered_body(self) -> None:
        """Finish the request body if it is already fully buffered (no I/O)."""
        while self._h11.their_state is h11.SEND_BODY:
            event = self._h11.next_event()
            if event is h11.NEED_DATA or not isinstance(event, (h11.Data, h11.EndOfMessage)):
                return

    # ----------------------------------------------------------- main loop
    async def serve(self) -> None:
        clean = False
        try:
            while True:
                try:
                    event = await self._next_event()
                except h11.RemoteProtocolError as exc:
                    await self._send_bad_request(exc)
                    return
                if not isinstance(event, h11.Request):
                    clean = True
                    return  # ConnectionClosed or PAUSED after close
                if not await self._handle(event):
                    clean = True
                    return
                if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
                    self._h11.start_next_cycle()
                else:
                    clean = True
                    return
        except (TimeoutError, ConnectionError, OSError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            if clean:
                self._writer.close()
            else:
                self._writer.transport.abort()

    async def _handle(self, event: h11.Request) -> bool:
        """Run one request/response cycle; False if the connection must close."""
        request = Request(self, event)
        try:
            response = await self._dispatch(request)
        except APIError as err:
            response = error_response(err)
        except (ConnectionError, h11.ProtocolError):
            raise
        except Exception as exc:  # a bug: answer 500, keep serving
            log(f"internal error on {request.method} {request.path}: {type(exc).__name__}: {exc}")
            response = error_response(APIError(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"))
        if self._secret is not None:  # after dispatch: a rotation answers under the new secret
            proof = self._secret.header_for(request.headers.get(NONCE_HEADER))
            if proof is not None:
                response.headers.append(proof)
        if self._peer_gone:
            if isinstance(response, StreamingResponse) and response.on_close:
                response.on_close()
            elif isinstance(response, Upgrade) and response.on_abandon:
                response.on_abandon()
            return False
        self._consume_buffered_body()
        if isinstance(response, Upgrade):
            await self._switch(request, response)
            return False
        unread_body = self._h11.their_state is h11.SEND_BODY
        if unread_body:
            response.headers.append(("Connection", "close"))
        if isinstance(response, StreamingResponse):
            await self._send_streaming(response)
        else:
            await self._send_simple(response)
        if unread_body:
            await self._linger()
            return False
        return True

    async def _switch(self, request: Request, upgrade: Upgrade) -> None:
        """Send 101 and run the new protocol on this socket until it is done."""
        started = False
        try:
            if self._h11.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
                # no Upgrade header, or an unread body: refuse instead of switching
                err = APIError(400, "INVALID_REQUEST", "not a protocol upgrade request")
                response = error_response(err)
                response.headers.append(("Connection", "close"))
                await self._send_simple(response)
                return
            self._writer.write(
                self._h11.send(
                    h11.InformationalResponse(status_code=101, headers=upgrade.headers, reason=b"Switching Protocols")
                )
            )
            trailing = self._h11.trailing_data[0]
            started = True
            await upgrade.run(self._reader, self._writer, trailing)
        except (ConnectionError, OSError, h11.ProtocolError):
            pass
        except Exception as exc:  # a bug in the protocol handler: log, drop the connection
            log(f"internal error in upgraded {request.method} {request.path}: {type(exc).__name__}: {exc}")
        finally:
            if not started and upgrade.on_abandon is not None:
                upgrade.on_abandon()

    # ----------------------------------------------------------- writing
    def _start(self, status: int, headers: Headers) -> bytes:
        return self._h11.send(h11.Response(status_code=status, headers=headers))

    async def _send_simple(self, response: Response) -> None:
        headers = list(response.headers)
        if response.status not in (204, 304) and not (100 <= response.status < 200):
            headers.append(("Content-Length", str(len(response.body))))
        out = self._start(response.status, headers)
        if response.body:
            out += self._h11.send(h11.Data(data=response.body))
        out += self._h11.send(h11.EndOfMessage())
        self._writer.write(out)
        await self._writer.drain()

    async def _send_streaming(self, response: StreamingResponse) -> None:
        """Pump the body while watching the socket for the client going away."""
        try:
            headers = list(response.headers)
            if response.content_length is not None:
                headers.append(("Content-Length", str(response.content_length)))
            self._writer.write(self._start(response.status, headers))
            await self._writer.drain()
            pump = asyncio.ensure_future(self._pump(response.chunks))
            watch = asyncio.ensure_future(self._watch_peer()) if self._h11.their_state is h11.DONE else None
            try:
                if watch is not None:
                    await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
                    if not pump.done() and watch.done() and not watch.cancelled() and watch.result():
                        raise ConnectionResetError("client went away during a streaming response")
                await pump
            finally:
                tasks = [t for t in (pump, watch) if t is not None]
                for task in tasks:
                    task.cancel()
                # collects their outcomes; still propagates a cancellation of *this* task
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if response.on_close is not None:
                try:
                    response.on_close()
                except Exception as exc:
                    log(f"on_close failed: {type(exc).__name__}: {exc}")

    async def _pump(self, chunks: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in chunks:
                if chunk:
                    self._writer.write(self._h11.send(h11.Data(data=chunk)))
                    await self._writer.drain()
            self._writer.write(self._h11.send(h11.EndOfMessage()))
            await self._writer.drain()
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _watch_peer(self) -> bool:
        """Read while a response streams.  True = client closed (EOF/reset).

        Anything the client sends meanwhile is a pipelined next request: it is
        fed to h11, which buffers it until ``start_next_cycle``.
        """
        buffered = 0
        while buffered < MAX_JSON_BODY:
            try:
                data = await self._reader.read(READ_CHUNK)
            except (ConnectionError, OSError):
                self._peer_gone = True
                return True
            if not data:
                self._peer_gone = True
                self._h11.receive_data(b"")
                return True
            buffered += len(data)
            self._h11.receive_data(data)
        return False  # too much pipelined data: stop reading, let TCP push back

    async def _linger(self) -> None:
        """Swallow an unread request body for a bit before closing.

        Closing a socket with unread input makes the kernel send RST, which can
        destroy the error response we just sent before the client reads it.
        """
        try:
            self._writer.write_eof()
        except (OSError, RuntimeError):
            pass
        deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
        swallowed = 0
        try:
            while swallowed < LINGER_BYTES:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return
                data = await asyncio.wait_for(self._reader.read(READ_CHUNK), remaining)
                if not data:
                    return
                swallowed += len(data)
        except (TimeoutError, ConnectionError, OSError):
            return

    async def _send_bad_request(self, exc: h11.RemoteProtocolError) -> None:
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"error": f"bad request: {exc}", "code": "BAD_REQUEST"}).encode()
        try:
            out = self._h11.send(
                h11.Response(
                    status_code=exc.error_status_hint,
                    headers=[
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("Connection", "close"),
                    ],
                )
            )
            out += self._h11.send(h11.Data(data=body)) + self._h11.send(h11.EndOfMessage())
            self._writer.write(out)
            await self._writer.drain()
        except (h11.ProtocolError, ConnectionError, OSError):
            pass
