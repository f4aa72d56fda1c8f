"""``cellbox server --cluster postgresql://…``: the control plane - API, proxy, sweep.

Stateless: sandboxes and the door's keys, quotas, secrets and audit log are in
PostgreSQL (``clusterdoor.py``), so any number of replicas can run behind a load
balancer; each shares only the key files (cluster.key, secrets.key) with the others.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvicorn

from .. import ids
from ..auth.guard import proxy_resolver
from ..config import Settings, load
from ..errors import Conflict, NotFound
from ..manager.store import Store
from ..proxy import SandboxProxy
from ..server import ServerOptions, _bind, _proxy_url, _Uvicorn, check_listen
from . import clusterdoor, migrate, nodeauth
from .control import ControlPlane

log = logging.getLogger("cellbox.cluster")
RESUME_WAIT_S = 120  # how long a request waits for a resume another request started
MIGRATE_WAIT_S = 60  # and for a live migration's frozen phase


def cluster_resolver(control: ControlPlane, key: bytes):
    """Client key checked (proxy_resolver) -> the sandbox's node, with a node token."""
    async def resolve(ref: str, port: int, principal, auth_error=None):
        if principal is None:
            raise auth_error or NotFound(f"sandbox {ref!r} not found", code="SANDBOX_NOT_FOUND")
        try:
            sb, address = await control.route(principal.project, ref)
        except NotFound:
            if not (principal.is_admin and ids.is_id(ref)):
                raise
            sb, address = await control.route(None, ref)  # as on one host: an admin reaches any ID
        if sb.state in ("terminated", "failed"):
            raise NotFound(f"sandbox {sb.id} is {sb.state}: it no longer accepts requests",
                           code="SANDBOX_TERMINATED")
        if sb.state == "migrating":  # live migration's frozen phase: wait, then the new node
            sb, address = await _migrated(control, sb)
        if sb.state == "suspended":  # auto-resume, through the scheduler: the request waits
            sb, address = await _resumed(control, sb)
        if address is None or sb.state != "running":
            raise Conflict(f"sandbox {sb.id} is {sb.state}", code="SANDBOX_NOT_RUNNING")
        host, _, nport = address.rpartition(":")
        local = sb.local_id or sb.id  # the node's ID for this incarnation (a resume makes a new one)
        target = f"{local}.local" if port == 9501 else f"{port}-{local}.local"
        extra = [(b"host", target.encode()),
                 (b"authorization", f"Bearer {nodeauth.token(key, local, port)}".encode())]
        return host, int(nport), sb.id, None, extra
    return resolve


async def _migrated(control: ControlPlane, sb):
    """Until a live migration's frozen phase ended (the sandbox runs on the target, or on
    its source if the migration failed): the client's request waits, never fails."""
    for _ in range(MIGRATE_WAIT_S * 50):
        await asyncio.sleep(0.02)
        if (sb := await control.get(sb.project, sb.id)).state != "migrating":
            break
    control.routes.pop(sb.id, None)  # its node changed: do not wait for the NOTIFY
    return await control.route(sb.project, sb.id)


async def _resumed(control: ControlPlane, sb):
    """Resume ``sb`` (placement may pick another node), or wait for the resume another
    request already queued (the outbox's one-open-command rule answers it ``BUSY``)."""
    try:
        await control.resume(sb.project, sb.id)
    except Conflict as exc:
        if exc.code != "BUSY":
            raise
        for _ in range(RESUME_WAIT_S * 2):
            if (await control.get(sb.project, sb.id)).state != "suspended":
                break
            await asyncio.sleep(0.5)
    return await control.route(sb.project, sb.id)


async def serve_cluster(dsn: str, opts: ServerOptions, settings: Settings | None = None) -> None:
    settings = settings or load()
    check_listen(opts)
    await asyncio.to_thread(migrate.upgrade, dsn)  # replicas serialise on the advisory lock
    key = nodeauth.load_key(settings.data_dir / "cluster.key")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api_sock = _bind(opts.host, opts.api_port)
    proxy_host = opts.proxy_host or opts.host
    store = Store(settings.db_path)  # image owners only: no sandbox or key lives here
    door = clusterdoor.open_door(settings, dsn, store.db)
    control = ControlPlane(dsn)
    await control.start()
    proxy = SandboxProxy(proxy_resolver(cluster_resolver(control, key), door.auth), authorize=True)
    from . import api_wide
    from .api import create_cluster_app
    try:
        await proxy.start(proxy_host, opts.proxy_port)
        proxy_url = _proxy_url(opts, opts.proxy_port)
        app = create_cluster_app(control, door, proxy_url)
        api_wide.install(app, door, control, proxy_url, key)  # the door's routes, the wider API, the 501s
        web = _Uvicorn(uvicorn.Config(app, lifespan="off",
                                      log_level=opts.log_level, access_log=opts.access_log))
        print(f"cellbox server (cluster): api http://{opts.host}:{api_sock.getsockname()[1]} proxy {proxy_url}",
              file=sys.stderr, flush=True)
        serving = asyncio.ensure_future(web.serve(sockets=[api_sock]))
        await asyncio.wait({serving, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        web.should_exit = True
        await serving
    finally:
        await proxy.stop()
        await control.close()
        door.store.close()
        store.close()
        api_sock.close()


def run(dsn: str, opts: ServerOptions) -> None:
    logging.basicConfig(level=getattr(logging, opts.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    asyncio.run(serve_cluster(dsn, opts))
