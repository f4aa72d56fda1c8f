"""asyncio flavour of the few socket and concurrency primitives the SDK needs.

``_backend_sync.py`` has the same names with blocking sockets and threads; the code in
``_async/`` uses only these, so ``scripts/unasync.py`` can turn it into ``_sync/`` by
swapping this module for that one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

Lock = asyncio.Lock

_background: set[asyncio.Task[Any]] = set()


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def spawn(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
    """Run ``fn(*args)`` in the background (a task here, a daemon thread in the sync flavour)."""
    task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(fn(*args))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def run_both(
    first: Callable[[], Coroutine[Any, Any, Any]],
    second: Callable[[], Coroutine[Any, Any, Any]],
) -> None:
    """Run two loops concurrently and return when both have finished."""
    await asyncio.gather(first(), second(), return_exceptions=True)


class Stream:
    """A TCP (or TLS) connection: ``read`` returns b"" at EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        if timeout is None:
            return await self._reader.read(max_bytes)
        return await asyncio.wait_for(self._reader.read(max_bytes), timeout)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, asyncio.CancelledError):
            pass


async def connect_tcp(host: str, port: int, *, tls: bool = False, timeout: float = 30.0) -> Stream:
    ctx = ssl.create_default_context() if tls else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if tls else None), timeout
    )
    return Stream(reader, writer)


class Listener:
    """A local TCP listener; ``accept`` returns None once it is closed."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Stream | None] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self.host, self.port = "127.0.0.1", 0

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._queue.put(Stream(reader, writer))

    async def accept(self) -> Stream | None:
        return await self._queue.get()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._queue.put(None)


async def listen(host: str, port: int) -> Listener:
    listener = Listener()
    server = await asyncio.start_server(listener._on_connect, host, port)
    listener._server = server
    listener.host, listener.port = server.sockets[0].getsockname()[:2]
    return listener
