"""``SandboxProxy``: the listening socket, the client connections, start and stop."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module

import h11

from .. import observe

from .activity import ActivityCallback
from .inflight import InFlight
from .client import READ_CHUNK, ClientConnection, ClientGone
from .exchange import Exchange, Hooks, Resolver

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9443
STOP_TIMEOUT = 10.0


def _no_activity(sandbox_id: str) -> None:
    pass


class SandboxProxy:
    """HTTP/WebSocket proxy from clients to the agents (and user ports) of sandboxes.

    ``resolver(ref, port)`` maps a sandbox ID or name and a port to ``(ip, port,
    sandbox_id)``; it raises ``cellbox.errors`` exceptions (``NotFound`` with code
    ``SANDBOX_NOT_FOUND``, ``Conflict`` with ``SANDBOX_NOT_RUNNING``, anything with
    ``PORT_NOT_EXPOSED`` for a user port outside ``exposed_ports``) and may take its
    time (resuming a suspended sandbox): the request waits. ``on_activity(sandbox_id)``
    is called for every request and, while a stream or WebSocket carries bytes, at
    least every ``activity_interval`` seconds; it must not block.
    """

    def __init__(
        self,
        resolver: Resolver,
        on_activity: ActivityCallback | None = None,
        *,
        connect_timeout: float = 10.0,
        activity_interval: float = 2.0,
        head_timeout: float = 120.0,
        authorize: bool = False,
        ssl: "ssl_module.SSLContext | None" = None,
        domain: str | None = None,
        inflight: InFlight | None = None,
    ) -> None:
        # authorize: pass each request's Authorization to the resolver (which then
        # decides), and keep cellbox keys from reaching the sandbox.
        self._hooks = Hooks(resolver, on_activity or _no_activity, connect_timeout, activity_interval,
                            head_timeout=head_timeout, authorize=authorize, domain=domain,
                            inflight=inflight)
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually bound (useful after ``start(port=0)``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Client connections currently open."""
        return len(self._tasks)

    async def start(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        self._server = await asyncio.start_server(self._on_client, host, port, limit=READ_CHUNK, ssl=self._ssl)
        log.info("sandbox proxy listening on %s:%d", host, self.port)

    async def stop(self) -> None:
        """Stop listening and cut every connection in flight (their upstreams too)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            if stuck:  # a bug, but stop() must still return
                log.error("%d proxy connections did not stop within %.0f s", len(stuck), STOP_TIMEOUT)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> "SandboxProxy":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(ClientConnection(reader, writer))
        except asyncio.CancelledError:
            pass  # stop(): the connection is closed below
        finally:
            self._tasks.discard(task)

    async def _serve(self, client: ClientConnection) -> None:
        """Requests one after another on one connection, each routed on its own."""
        abort = True
        try:
            while True:
                try:
                    request = await client.next_request()
                except h11.RemoteProtocolError as exc:
                    await client.send_protocol_error(exc)
                    await client.linger()
                    abort = False
                    return
                if request is None:
                    abort = False
                    return
                observe.count("proxy_request")  # metrics hook (cellbox/metrics)
                keep = await Exchange(client, request, self._hooks).run()
                if keep and client.h11.our_state is h11.DONE and client.h11.their_state is h11.DONE:
                    client.h11.start_next_cycle()
                    continue
                abort = client.broken
                if not abort and client.h11.their_state is h11.SEND_BODY:
                    await client.linger()  # answered before the body was read
                return
        except ClientGone:
            return
        except Exception:
            log.exception("proxy connection from %s failed", client.peer_ip)
        finally:
            client.close(abort=abort)
