"""Serve a request with an ASGI app inside the proxy, instead of forwarding it.

The E2B view's envd and code-interpreter apps (cellbox/e2b/) are host-side code: they
used to run behind a loopback uvicorn the proxy forwarded to, which cost a second
HTTP parse, a loopback connection and its FIN wait on every call (measured: ~2 ms of
the E2B SDK's ``commands.run("echo hi")``, bench/e2b.py). A resolver that answers
``LocalApp(app)`` instead of an address has the exchange run here: the client's own
h11 connection is the ASGI server.

ASGI as the apps need it: one ``http`` scope; ``receive`` gives the request body,
then ``http.disconnect`` once the client goes; ``send`` writes the head and body
chunks as they come (streams leave unbuffered). A client that goes mid-response
cancels the app, as a closed upstream connection did before. An app that fails
before its head is a 500 with the proxy's JSON error; after it, the connection is
cut (a FIN could pass a truncated body off as complete).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

import h11

from . import errors
from .activity import ActivityTicker
from .client import ClientConnection, ClientGone

log = logging.getLogger(__name__)
DRAIN_ABOVE = 256 << 10
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


@dataclass(frozen=True)
class LocalApp:
    """A resolver's answer meaning "serve this request with ``app``, here"."""

    app: ASGIApp


class AppBroken(Exception):
    """The app failed after its response head left: the client connection must be cut."""


def _scope(request: h11.Request, client: ClientConnection) -> dict[str, Any]:
    target = request.target
    path, _, query = target.partition(b"?")
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": request.method.decode("ascii", "replace"), "scheme": "http",
        "path": unquote(path.decode("latin-1")), "raw_path": path, "query_string": query, "root_path": "",
        "headers": [(k, v) for k, v in request.headers], "client": (client.peer_ip, 0), "server": None,
    }


class _Bridge:
    """``receive``/``send`` over one client connection, for one request."""

    def __init__(self, client: ClientConnection, ticker: ActivityTicker) -> None:
        self.client = client
        self.ticker = ticker
        self.body_done = False
        self.owe_end = False
        self.gone = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None
        self.head: dict[str, Any] | None = None
        self.finished = False
        self.out = bytearray()

    async def receive(self) -> dict[str, Any]:
        if self.owe_end:  # the (empty) body was taken before the app started
            self.owe_end = False
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self.body_done:
            event = await self.client.next_body_event()
            if isinstance(event, h11.Data):
                self.ticker.tick()
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            self.body_done = True
            self._watch()
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def _watch(self) -> None:
        async def watch() -> None:
            try:
                await self.client.watch()
            except ClientGone:
                self.gone.set()
                raise

        self.watcher = asyncio.ensure_future(watch())

    async def send(self, message: dict[str, Any]) -> None:
        if self.gone.is_set():
            raise ClientGone("client closed the connection")
        kind = message.get("type")
        if kind == "http.response.start":
            self.head = message
            return
        if kind != "http.response.body" or self.head is None or self.finished:
            return
        if self.client.can_respond():
            self._write(self._head_event())
        body = bytes(message.get("body", b""))
        if body:
            self._write(h11.Data(data=body))
            self.ticker.tick()
        if not message.get("more_body", False):
            self.finished = True
            self._write(h11.EndOfMessage())
        await self._drain()

    def _head_event(self) -> h11.Response:
        assert self.head is not None
        out = [(bytes(k).lower(), bytes(v)) for k, v in self.head.get("headers", [])]
        out = [(k, v) for k, v in out if k not in (b"connection", b"keep-alive")]
        if self.client.h11.their_state is h11.SEND_BODY:  # answered before the body was read
            out.append((b"connection", b"close"))
        return h11.Response(status_code=int(self.head["status"]), headers=out)

    def _write(self, event: Any) -> None:
        """Queue an event's bytes; they leave together at the end of this loop turn, so a
        stream's last message, end-of-stream and chunk terminator are one TCP segment."""
        data = self.client.h11.send(event)
        if not data:
            return
        if not self.out:
            asyncio.get_running_loop().call_soon(self._flush)
        self.out += data

    def _flush(self) -> None:
        if self.out and not self.client.writer.is_closing():
            self.client.writer.write(bytes(self.out))
        self.out.clear()

    async def _drain(self) -> None:
        """Back-pressure only once the socket's buffer is full (``drain`` at every chunk
        would cost a loop turn each)."""
        transport = self.client.writer.transport
        if transport.get_write_buffer_size() + len(self.out) > DRAIN_ABOVE:
            self._flush()
            try:
                await self.client.writer.drain()
            except (ConnectionError, OSError) as exc:
                raise ClientGone(f"client connection lost: {exc!r}") from None


def _bodiless(request: h11.Request) -> bool:
    """No body by HTTP's framing rules: no Transfer-Encoding, Content-Length absent or 0."""
    names = {k: v for k, v in request.headers}
    return b"transfer-encoding" not in names and names.get(b"content-length", b"0").strip() == b"0"


async def serve(client: ClientConnection, request: h11.Request, app: ASGIApp, ticker: ActivityTicker) -> bool:
    """Run ``app`` for ``request``; True if the connection may carry another request."""
    bridge = _Bridge(client, ticker)
    if _bodiless(request) and isinstance(client.h11.next_event(), h11.EndOfMessage):
        bridge.body_done = bridge.owe_end = True  # complete already: watch for the client
        bridge._watch()  # going from the start (an app may never call receive)
    task = asyncio.ensure_future(app(_scope(request, client), bridge.receive, bridge.send))
    try:
        await _run(bridge, task)
    finally:
        for t in (task, bridge.watcher):
            if t is not None and not t.done():
                t.cancel()
        if bridge.watcher is not None:
            await asyncio.gather(bridge.watcher, return_exceptions=True)
    bridge._flush()
    if not bridge.finished:
        if client.can_respond():
            await client.send_error(errors.internal("the app gave no response"))
            return False
        raise AppBroken("app ended its response early")
    return client.h11.their_state is h11.DONE


async def _run(bridge: _Bridge, task: asyncio.Task[None]) -> None:
    gone = asyncio.ensure_future(bridge.gone.wait())
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():  # the client went: stop the app's work at once
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientGone("client closed the connection")
    exc = task.exception() if not task.cancelled() else None
    if isinstance(exc, ClientGone):
        raise exc
    if exc is not None:
        log.error("local app failed on %s", bridge.client.peer_ip, exc_info=exc)
        if bridge.client.can_respond():
            await bridge.client.send_error(errors.internal(type(exc).__name__))
            bridge.finished = True
            return
        raise AppBroken(f"app failed mid-response: {exc!r}")
