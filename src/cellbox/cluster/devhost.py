"""Helpers of ``scripts/cluster-dev.sh``: prepare a node's or the control plane's data
dir, and tear a node's sandboxes down. ``python -m cellbox.cluster.devhost ACTION``.

prepare-node   data dir, pool (its own loop-mounted btrfs), agent tree, default
               image - the steps of ``cellbox setup`` but the network, which the node
               makes in its own namespace at start (manager.start)
prepare-control  data dir, vault key and the first admin key (in the cluster database
               named by CELLBOX_CLUSTER, migrated before): a control plane keeps no sandboxes
teardown-node  destroy every sandbox this node's SQLite lists, through the manager
               (kill -9 of a node leaves them running; this is how they go)

Settings come from the CELLBOX_* variables, as for the node itself.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace

from ..config import load


def prepare_node() -> None:
    from ..runtime import agentfs
    from ..storage import images, pool

    settings = load()
    for d in (settings.data_dir, settings.sandboxes_dir, settings.agentfs, settings.data_dir / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    pool.ensure_pool(settings)
    agentfs.ensure(settings.agentfs)
    asyncio.run(images.OciLayout(settings).resolve(settings.default_image))


def prepare_control() -> None:
    import os

    from ..auth import bootstrap, vault
    from .keystore import PgAuthStore

    settings = load()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    vault.ensure_key(bootstrap.vault_key_path(settings))
    store = PgAuthStore(os.environ["CELLBOX_CLUSTER"])
    try:
        bootstrap.ensure_admin_key(settings, store)  # type: ignore[arg-type]
    finally:
        store.close()


async def _teardown() -> None:
    from ..manager.lifecycle import SandboxManager
    from ..manager.store import Store

    settings = replace(load(), warm_pool_size=0)
    store = Store(settings.db_path)
    manager = SandboxManager(settings, store)
    await manager.start()
    try:
        for rec in store.list(live_only=True):
            try:
                await manager.destroy(rec.id, rec.namespace, reason="cluster_down")
            except Exception as exc:  # noqa: BLE001 - go on with the others, say which failed
                print(f"teardown: {rec.id}: {exc}", file=sys.stderr)
    finally:
        await manager.stop()
        store.close()


def main(argv: list[str]) -> int:
    actions = {"prepare-node": prepare_node, "prepare-control": prepare_control,
               "teardown-node": lambda: asyncio.run(_teardown())}
    if len(argv) != 1 or argv[0] not in actions:
        print(f"usage: python -m cellbox.cluster.devhost {{{'|'.join(actions)}}}", file=sys.stderr)
        return 2
    actions[argv[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
