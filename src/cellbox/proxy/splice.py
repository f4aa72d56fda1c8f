"""Copy raw bytes both ways between two connections, after a protocol switch (101).

Once the agent has accepted a WebSocket upgrade the proxy no longer understands the
stream, and does not need to: frames (PTY, TCP tunnel) pass through untouched. The
splice ends when either side closes or fails; both are then closed, after flushing
what was already read (so a WebSocket close frame still reaches the other side).
"""

from __future__ import annotations

import asyncio

from .activity import ActivityTicker

CHUNK = 64 * 1024


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, ticker: ActivityTicker) -> None:
    while True:
        data = await src.read(CHUNK)
        if not data:
            return
        dst.write(data)
        await dst.drain()
        ticker.tick()


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ticker: ActivityTicker,
) -> None:
    """Run until one direction ends; never raises for I/O errors (they end it too)."""
    tasks = [asyncio.ensure_future(_pump(a[0], b[1], ticker)), asyncio.ensure_future(_pump(b[0], a[1], ticker))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
