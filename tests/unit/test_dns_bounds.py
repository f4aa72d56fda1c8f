"""The resolver bounds what one client holds: TCP connections per address, idle time.

Every open connection is a file descriptor of the server process (API, proxy and
resolver share it); the kernel bounds them too (network/walls.py), this is the bound
that holds per process.
"""

from __future__ import annotations

import asyncio
import socket

from cellbox.network import dns


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_connections_per_client_are_capped_and_idle_ones_dropped(monkeypatch):
    monkeypatch.setattr(dns, "TCP_IDLE_TIMEOUT", 0.5)

    async def scenario() -> tuple[list[bool], bool]:
        fwd = dns.DnsForwarder("127.0.0.1", ["127.0.0.1"], port=_free_port(), max_tcp_per_client=2)
        await fwd.start()
        try:
            conns = [await asyncio.open_connection("127.0.0.1", fwd.port) for _ in range(5)]
            closed = []
            for reader, _ in conns:  # over the cap: closed at once; the first two stay
                try:
                    closed.append(await asyncio.wait_for(reader.read(1), 0.2) == b"")
                except asyncio.TimeoutError:
                    closed.append(False)  # still open, waiting for a query
                except ConnectionError:
                    closed.append(True)  # aborted (RST)
            # Idle: the two held ones go after the timeout.
            idle_closed = all([await asyncio.wait_for(r.read(1), 3) == b"" for r, _ in conns[:2]])
            for _, w in conns:
                w.close()
            return closed, idle_closed
        finally:
            await fwd.stop()

    closed, idle_closed = asyncio.run(scenario())
    assert closed == [False, False, True, True, True]
    assert idle_closed
