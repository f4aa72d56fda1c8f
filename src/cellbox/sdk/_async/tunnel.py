"""Local TCP listeners relayed into a sandbox over WebSockets (spec §3.4)."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from ...errors import CellboxError, InvalidRequest
from .._backend_async import Listener, Stream, listen, run_both, spawn
from .websocket import AsyncWebSocket

if TYPE_CHECKING:
    from .sandbox import AsyncSandbox

log = logging.getLogger("cellbox.sdk")
READ_SIZE = 65536


class AsyncTunnel:
    """Relays every connection to ``local_host:local_port`` to ``remote_port`` in the sandbox,
    one WebSocket per connection. ``close`` stops listening and cuts open connections."""

    def __init__(self, sandbox: AsyncSandbox, remote_port: int, listener: Listener) -> None:
        self.sandbox = sandbox
        self.remote_port = remote_port
        self._listener = listener
        self._open: set[Stream] = set()
        self.closed = False
        self.errors: list[CellboxError] = []

    @property
    def local_host(self) -> str:
        return str(self._listener.host)

    @property
    def local_port(self) -> int:
        return int(self._listener.port)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.local_host}:{self.local_port} -> {self.sandbox.id}:{self.remote_port}>"

    @classmethod
    async def open(
        cls, sandbox: AsyncSandbox, remote_port: int, local_port: int = 0, local_host: str = "127.0.0.1"
    ) -> AsyncTunnel:
        if not 1 <= int(remote_port) <= 65535:
            raise InvalidRequest(f"invalid remote port {remote_port}")
        tunnel = cls(sandbox, int(remote_port), await listen(local_host, local_port))
        spawn(tunnel._serve)
        return tunnel

    async def __aenter__(self) -> AsyncTunnel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.closed = True
        await self._listener.close()
        for stream in list(self._open):
            await stream.close()

    async def _serve(self) -> None:
        while not self.closed:
            try:
                local = await self._listener.accept()
            except OSError:
                return
            if local is None:
                return
            spawn(self._relay, local)

    async def _relay(self, local: Stream) -> None:
        self._open.add(local)
        try:
            try:
                ws = await AsyncWebSocket.connect(self.sandbox._proxy(), f"/api/v1/tunnels/tcp?port={self.remote_port}")
            except CellboxError as exc:
                log.warning("tunnel to %s:%s: %s", self.sandbox.id, self.remote_port, exc)
                self.errors.append(exc)
                return
            try:
                await run_both(
                    functools.partial(self._upstream, local, ws), functools.partial(self._downstream, ws, local)
                )
            finally:
                await ws.close()
        finally:
            self._open.discard(local)
            await local.close()

    async def _upstream(self, local: Stream, ws: AsyncWebSocket) -> None:
        """Local client -> sandbox; at end of file, start closing the WebSocket."""
        try:
            while True:
                data = await local.read(READ_SIZE)
                if not data:
                    break
                await ws.send(data)
        except (OSError, CellboxError):
            pass
        await ws.send_close()

    async def _downstream(self, ws: AsyncWebSocket, local: Stream) -> None:
        """Sandbox -> local client; when the sandbox side ends, hang up on the client."""
        try:
            while (data := await ws.recv()) is not None:
                await local.write(data)
        except (OSError, CellboxError):
            pass
        await local.close()
