"""``cellbox server``: one asyncio process serving the lifecycle API and the sandbox proxy.

Everything shares one event loop: uvicorn (driven as ``Server.serve()``, not
``uvicorn.run``), the sandbox manager, the proxy and the timeout sweep. Order:

start  manager.start() → reconcile (re-adopt / fail / reclaim) → timers → proxy → API
stop   (SIGTERM/SIGINT) API stops accepting and drains → creates in flight finish
       (bounded) → timers → proxy → manager.stop() → store closed

Sandboxes are **not** destroyed on stop: they keep running and the next start
re-adopts them (``manager/reconcile.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from .api import public_urls
from .api.public_urls import PublicUrls
from .web import create_web_app
from .auth.door import Door
from .auth.guard import proxy_resolver
from .auth.tls import is_loopback, server_context
from .api.http import MAX_HEAD, H11Protocol431
from .config import Settings, load
from .manager.reconcile import reconcile
from .manager.lifecycle import SandboxManager
from .manager.service import SandboxService
from .manager.store import Store
from .manager.timeouts import Timers
from .pools.service import PoolService

log = logging.getLogger("cellbox.server")


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    api_port: int = 8900
    proxy_port: int = 9443
    log_level: str = "info"
    access_log: bool = False
    # The proxy's own address when it differs from the API's (CELLBOX_PROXY_LISTEN).
    proxy_host: str | None = None
    # One certificate chain and key for both listeners; None: plain HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Listen on a non-loopback address without TLS (keys would cross the network in clear).
    insecure: bool = False
    # What clients on other machines use: the proxy's base URL (sandbox_url) and the
    # domain of exposed-port host names ({port}-{id}.{domain}).
    public_proxy_url: str | None = None
    proxy_domain: str | None = None


def check_listen(opts: ServerOptions) -> None:
    """Refuse to send API keys in clear over a network: a non-loopback listener needs TLS
    unless ``--insecure`` says the operator knows (e.g. TLS ends in front of us)."""
    if opts.tls_cert is not None or opts.insecure:
        return
    for host in {opts.host, opts.proxy_host or opts.host}:
        if not is_loopback(host):
            raise SystemExit(f"cellbox server: refusing to listen on {host} without TLS: API keys would cross the "
                             "network in clear. Give --tls-cert/--tls-key (or --tls after cellbox setup "
                             "--tls-self-signed), or --insecure if TLS ends in front of this server.")


def _proxy_url(opts: ServerOptions, proxy_port: int) -> str:
    """The ``sandbox_url`` clients get (cluster/server_main.py uses it too)."""
    return _public_urls(opts, proxy_port).proxy_url


def _public_urls(opts: ServerOptions, proxy_port: int) -> PublicUrls:
    return public_urls.resolve(host=opts.proxy_host or opts.host, proxy_port=proxy_port, tls=opts.tls_cert is not None,
                               public_proxy_url=opts.public_proxy_url, proxy_domain=opts.proxy_domain)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: we install ours on the loop, and
    uvicorn would otherwise re-raise SIGTERM after its shutdown, killing the process
    before the manager is stopped."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """The API's listening socket, made here so a port in use fails before any sandbox
    is touched.

    ``IPPROTO_TCP``, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on
    accepted sockets whose ``proto`` says TCP, and an accepted socket inherits the
    listener's. With 0, every response after a connection's first waited for the
    client's delayed ACK: uvicorn writes the head and the body separately, and the
    body sat ~40 ms (GET /images 48 ms on a keep-alive connection, 7 ms with curl's
    new connection each time; ``tests/unit/test_nodelay.py``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _make_proxy(service: SandboxService, door: Door, ssl: Any, domain: str | None, agent_port: int,
                e2b: Any = None) -> Any | None:
    try:
        from .proxy import SandboxProxy  # type: ignore[attr-defined]
    except ImportError as exc:
        log.warning("sandbox proxy not available (%s); serving the API only", exc)
        return None
    resolver = proxy_resolver(service.resolve, door.auth, door.audit, agent_port)
    if e2b is not None:  # E2B view: port 49983 and traffic tokens (cellbox/e2b/view.py)
        resolver = e2b.wrap(resolver)
    return SandboxProxy(resolver, service.on_activity, authorize=True, ssl=ssl, domain=domain)


def _e2b_view(service: SandboxService, settings: Settings, domain: str | None) -> Any | None:
    """The E2B view (issue 17), unless CELLBOX_E2B=0 or its dependencies are missing."""
    if os.environ.get("CELLBOX_E2B", "1") == "0":
        return None
    try:
        from .e2b.view import E2BView
    except ImportError as exc:  # connectrpc / protobuf-py not installed
        log.warning("E2B view not available (%s)", exc)
        return None
    return E2BView(service, settings, domain)


async def serve(opts: ServerOptions, settings: Settings | None = None) -> None:
    settings = settings or load()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    check_listen(opts)
    api_sock = _bind(opts.host, opts.api_port)  # fail fast, before touching sandboxes
    proxy_host = opts.proxy_host or opts.host
    proxy_port = opts.proxy_port
    if proxy_port == 0:  # pick one now: sandbox_url must name it
        with _bind(proxy_host, 0) as probe:
            proxy_port = probe.getsockname()[1]
    proxy_ssl = server_context(opts.tls_cert, opts.tls_key) if opts.tls_cert and opts.tls_key else None

    store = Store(settings.db_path)
    door = Door.open(settings, store.db)
    manager = SandboxManager(settings, store)
    await manager.start()
    service = SandboxService(manager, proxy_port=proxy_port, door=door)
    urls = _public_urls(opts, proxy_port)
    service.proxy_url, service.ingress_endpoint = urls.proxy_url, urls.ingress_endpoint
    timers = Timers(service)
    e2b = _e2b_view(service, settings, opts.proxy_domain)  # E2B view (issue 17)
    pools = PoolService(service)
    proxy = None
    web: _Uvicorn | None = None
    try:
        report = await reconcile(manager)
        timers.start()
        await pools.start()  # issue 14: each pool's warm sandboxes
        if e2b is not None:
            await e2b.start()
        proxy = _make_proxy(service, door, proxy_ssl, opts.proxy_domain, settings.agent_port, e2b)
        if proxy is not None:
            await proxy.start(proxy_host, proxy_port)
        tls: dict[str, Any] = {}
        if opts.tls_cert and opts.tls_key:
            tls = {"ssl_certfile": str(opts.tls_cert), "ssl_keyfile": str(opts.tls_key)}
        config = uvicorn.Config(
            create_web_app(service, door, e2b.rest if e2b else None, pools), lifespan="off", log_level=opts.log_level, access_log=opts.access_log,
            timeout_graceful_shutdown=10, server_header=False, **tls,
            # 431 for a header flood, not uvicorn's plain 400 (api/http.py).
            http=H11Protocol431, h11_max_incomplete_event_size=MAX_HEAD,
        )
        web = _Uvicorn(config)
        api_port = api_sock.getsockname()[1]
        scheme = "https" if tls else "http"
        print(
            f"cellbox server: api {scheme}://{opts.host}:{api_port} (web console at /ui) "
            f"proxy {scheme}://{proxy_host}:{proxy_port}{'' if proxy else ' (not running)'} "
            f"(sandbox_url {service.proxy_url}); "
            f"reconcile: {report.summary()}",
            file=sys.stderr, flush=True,
        )
        serving = asyncio.ensure_future(web.serve(sockets=[api_sock]))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        web.should_exit = True
        await serving
        stopping.cancel()
    finally:
        log.info("stopping")
        await service.close()
        await pools.close()
        await timers.stop()
        if proxy is not None:
            await proxy.stop()
        if e2b is not None:
            await e2b.stop()
        await manager.stop()
        store.close()
        api_sock.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")


def run(opts: ServerOptions) -> None:
    logging.basicConfig(
        level=getattr(logging, opts.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(serve(opts))
