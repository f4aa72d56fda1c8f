"""The sandboxes' resolver: a small DNS forwarder on the bridge gateway, port 53.

Sandboxes' ``/etc/resolv.conf`` points here, not at the host's resolver, so that
(a) the resolver is reachable whatever the host's own configuration is, and (b) the
answers for host names in a sandbox's egress policy are seen here and fed into its
nftables sets with their TTL (``egress.py``) before the sandbox gets them. Sandboxes
with a policy cannot go around it: their port-53 traffic to anywhere is redirected
here (``firewall.py``).

Hand-written on asyncio: relaying is a few lines, and the only parsing needed (the
question and the answered addresses) is done with dnspython (``dnsmsg.py``) and only
for sandboxes whose policy names hosts; everything else is relayed as bytes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from pathlib import Path
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import dnsmsg

if TYPE_CHECKING:
    from .egress import EgressControl

log = logging.getLogger(__name__)
QUERY_TIMEOUT = 5.0
# A TCP client that sends nothing for this long is dropped: every open connection is a
# file descriptor of the server process (API, proxy and resolver share it).
TCP_IDLE_TIMEOUT = 10.0


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
        answer = await self.forwarder.answer(query, addr[0], tcp=False)
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
                 override_file: "Path | None" = None, egress: "EgressControl | None" = None,
                 max_tcp_per_client: int = 16) -> None:
        self.listen, self.port, self._default = listen, port, upstreams
        # Open TCP connections per client address. The kernel bounds them host-wide too
        # (nft ``ct count`` in network/walls.py); this bound holds per process even
        # where that rule is absent, e.g. a forwarder on another address.
        self.max_tcp_per_client = max_tcp_per_client
        self._tcp_clients: dict[str, int] = {}
        self.egress = egress
        self.override_file = override_file
        self._override: tuple[float, list[str]] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
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

    async def answer(self, query: bytes, client_ip: str, *, tcp: bool) -> bytes | None:
        """Relay one query; first teach the client's egress rules the answer, if they care."""
        answer = await (self.resolve_tcp(query) if tcp else self.resolve_udp(query))
        if answer is not None and self.egress is not None:
            pub = self.egress.lookup(client_ip)
            if pub is not None and (pub.allow_names or pub.deny_names):
                qname = dnsmsg.question(query)
                if qname:
                    await self.egress.learn(pub, qname, answer)
        return answer

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

    async def resolve_tcp(self, query: bytes) -> bytes | None:
        for upstream in self.upstreams:
            try:
                async with asyncio.timeout(QUERY_TIMEOUT):
                    reader, writer = await asyncio.open_connection(upstream, 53)
                    try:
                        writer.write(struct.pack("!H", len(query)) + query)
                        (length,) = struct.unpack("!H", await reader.readexactly(2))
                        return await reader.readexactly(length)
                    finally:
                        writer.close()
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                log.debug("dns upstream %s (tcp): %s", upstream, exc)
        return None

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """DNS over TCP (RFC 7766): length-prefixed queries, answered one by one."""
        client_ip = writer.get_extra_info("peername")[0]
        held = self._tcp_clients.get(client_ip, 0)
        if held >= self.max_tcp_per_client:
            writer.transport.abort()  # at once: the fd must not wait for a FIN exchange
            return
        self._tcp_clients[client_ip] = held + 1
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    query = await reader.readexactly(length)
                answer = await self.answer(query, client_ip, tcp=True)
                if answer is None:
                    return
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            left = self._tcp_clients.get(client_ip, 1) - 1
            if left > 0:
                self._tcp_clients[client_ip] = left
            else:
                self._tcp_clients.pop(client_ip, None)
            writer.close()
