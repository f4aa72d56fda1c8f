"""``cellbox node``: one host of a cluster - the single-host manager, its proxy as the
data path, and the pull loop (node.py).

Start order as ``cellbox server``'s: manager, local reconcile, proxy, then the loop
joins the cluster. The node's SQLite (its data dir) is its cache of what runs here;
the cluster's truth is PostgreSQL. The node keeps the single-host warm pool
(CELLBOX_WARM_POOL): a create the pool can serve claims a warm sandbox, which keeps
its own (local) ID; the cluster records it as the sandbox's ``local_id``, which the
proxy and every later command already use. Idle suspend (CELLBOX_NAMED_IDLE_SECS) is
off on nodes: not yet routed through the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ..auth.keys import Principal, Role
from ..config import Settings, load
from ..errors import Unauthorized
from ..manager.reconcile import reconcile
from ..manager.lifecycle import SandboxManager
from ..manager.service import SandboxService
from ..manager.store import Store
from ..proxy import SandboxProxy
from ..proxy.inflight import InFlight
from . import livemigrate, migrate_in, node_reads, nodeauth
from .artifacts import ArtifactStore
from .fingerprint import host_fingerprint
from .node import NodeAgent
from .records import NodeInfo

log = logging.getLogger("cellbox.node")
# Who the node's proxy acts as once the control plane's token checked out: the
# control plane already matched the client's key to the sandbox's project.
CONTROL_PLANE = Principal(key_id="cluster", project="", role=Role.ADMIN)


@dataclass(frozen=True)
class NodeOptions:
    cluster: str
    node_id: str
    listen: str  # address:port of the data path (the node's proxy)
    capacity_sandboxes: int = 20
    capacity_mem_mb: int = 8192
    key_file: Path | None = None
    # The start-up reconcile (re-adopt records, sweep leftovers). Off only for several
    # nodes on one shared machine (cluster-dev.sh), where the sweep would see other
    # cellbox instances' cgroups as leftovers of its own.
    reconcile: bool = True
    # Suspend images in S3-compatible storage (artifacts.py); None: suspend stays local.
    s3_endpoint: str | None = None
    s3_bucket: str | None = None


def node_resolver(service: SandboxService, key: bytes):
    """The node proxy's resolver: only the control plane's token, for this ref and port."""
    # *request: the method and target the proxy passes for the door's audit (unused here)
    async def resolver(ref: str, port: int, authorization: bytes | None, *request: bytes):
        if not nodeauth.verify(key, authorization, ref, port):
            raise Unauthorized("this is a cluster node: requests come through the control plane's proxy")
        return await service.resolve(ref, port, CONTROL_PLANE)
    return resolver


async def serve_node(opts: NodeOptions, settings: Settings | None = None) -> None:
    # No idle suspend on a node: it would change a sandbox's state behind the cluster's
    # back (the control plane's suspend goes through object storage instead).
    settings = replace(settings or load(), named_idle_secs=0)
    key = nodeauth.load_key(opts.key_file or settings.data_dir / "cluster.key")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, _, port = opts.listen.rpartition(":")
    store = Store(settings.db_path)
    manager = SandboxManager(settings, store)
    await manager.start()
    service = SandboxService(manager, proxy_port=int(port))
    inflight = InFlight()
    proxy = SandboxProxy(node_resolver(service, key), service.on_activity, authorize=True, inflight=inflight)
    try:
        report = await reconcile(manager) if opts.reconcile else None
        await proxy.start(host, int(port))
        images = tuple(i.name for i in manager.image_manager.list())
        info = NodeInfo(opts.node_id, opts.listen, opts.capacity_sandboxes, opts.capacity_mem_mb,
                        fingerprint=host_fingerprint(), images=images or (settings.default_image,))
        print(f"cellbox node {opts.node_id}: data path {opts.listen}, reconcile: {report.summary() if report else 'skipped'}",
              file=sys.stderr, flush=True)
        artifacts = None
        if opts.s3_endpoint and opts.s3_bucket:
            artifacts = ArtifactStore.connect(opts.s3_endpoint, opts.s3_bucket, key,
                                              settings.data_dir / "artifact-cache")
        inbound = await migrate_in.serve(service, key, opts.node_id, opts.cluster, host,
                                         livemigrate.port_of(opts.listen),
                                         extra=node_reads.routes(service, key, opts.node_id))
        try:
            await NodeAgent(opts.cluster, info, service, artifacts=artifacts, key=key,
                            inflight=inflight).run(stop)
        finally:
            await inbound.stop()
    finally:
        await service.close()
        await proxy.stop()
        await manager.stop()
        store.close()


def run(opts: NodeOptions) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    asyncio.run(serve_node(opts))
