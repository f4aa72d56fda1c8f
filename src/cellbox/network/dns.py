"""The sandboxes' resolver: a small DNS forwarder on the bridge gateway, port 53.

Sandboxes' ``/etc/resolv.conf`` points here, not at the host's resolver, so that
(a) the resolver is reachable whatever the host's own configuration is, and (b) the
network issue can watch the answers for allowed/denied host names and feed them into
nftables sets with their TTL. For now it relays UDP and TCP queries verbatim.

Hand-written on asyncio rather than a DNS library: it never parses a message yet, it
only relays bytes, which is ~60 lines; a parser (for the name rules) comes with the
network issue.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

log = logging.getLogger(__name__)
QUERY_TIMEOUT = 5.0


def host_upstreams(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    servers = []
    try:
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                servers.append(parts[1])
    except FileNotFoundError:
        pass
    return servers or ["127.0.0.1"]


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, forwarder: "DnsForwarder") -> None:
        self.forwarder = forwarder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.forwarder._spawn(self._answer(data, addr))

    async def _answer(self, query: bytes, addr: tuple[str, int]) -> None:
        answer = await self.forwarder.resolve_udp(query)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


class DnsForwarder:
    """Relays the sandboxes' queries to the upstream resolvers.

    Every cellbox process on a host (a server, a test's manager) serves the same
    gateway address with ``SO_REUSEPORT``, so the kernel may hand a query to any of
    them; they must agree on the upstreams. An optional file (one address per line)
    overrides the defaults for all of them at once and is re-read when it changes.
    """

    def __init__(self, listen: str, upstreams: list[str], port: int = 53,
                 override_file: "Path | None" = None) -> None:
        self.listen, self.port, self._default = listen, port, upstreams
        self.override_file = override_file
        self._override: tuple[float, list[str]] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpServer(self), local_addr=(self.listen, self.port), family=socket.AF_INET,
            reuse_port=True,
        )
        # reuse_port: a second cellbox process on this host (a test manager beside a
        # server) serves the same address; the kernel spreads queries between them.
        self._tcp = await asyncio.start_server(
            self._tcp_client, self.listen, self.port, reuse_address=True, reuse_port=True
        )

    async def stop(self) -> None:
        if self._udp:
            self._udp.close()
        if self._tcp:
            self._tcp.close()
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    @property
    def upstreams(self) -> list[str]:
        if self.override_file is not None:
            try:
                mtime = self.override_file.stat().st_mtime
            except FileNotFoundError:
                self._override = None
            else:
                if self._override is None or self._override[0] != mtime:
                    servers = self.override_file.read_text().split()
                    self._override = (mtime, servers)
                if self._override[1]:
                    return self._override[1]
        return self._default

    def set_override(self, servers: list[str] | None) -> None:
        """Point every forwarder on this host at ``servers`` (None: back to defaults)."""
        assert self.override_file is not None
        if servers:
            tmp = self.override_file.with_suffix(".tmp")
            tmp.write_text("\n".join(servers) + "\n")
            tmp.replace(self.override_file)
        else:
            self.override_file.unlink(missing_ok=True)

    async def resolve_udp(self, query: bytes) -> bytes | None:
        loop = asyncio.get_running_loop()
        for upstream in self.upstreams:
            transport, proto = await loop.create_datagram_endpoint(_Upstream, remote_addr=(upstream, 53))
            try:
                transport.sendto(query)
                return await asyncio.wait_for(proto.answer, QUERY_TIMEOUT)
            except (asyncio.TimeoutError, OSError) as exc:
                log.debug("dns upstream %s: %s", upstream, exc)
            finally:
                transport.close()
        return None

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(self.upstreams[0], 53), QUERY_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            writer.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
