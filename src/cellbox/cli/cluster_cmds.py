"""``cellbox node``: run this host as a node of a cluster (cluster/node_main.py)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group(invoke_without_command=True)
@click.option("--cluster", envvar="CELLBOX_CLUSTER", metavar="POSTGRESQL_URL",
              help="the cluster's PostgreSQL (postgresql://user@host:port/db)")
@click.option("--id", "node_id", envvar="CELLBOX_NODE_ID", help="this node's name in the cluster")
@click.option("--listen", envvar="CELLBOX_NODE_LISTEN", metavar="HOST:PORT",
              help="the data path: the address the control plane's proxy reaches this node on")
@click.option("--capacity", default=20, show_default=True, type=click.IntRange(1, 10000),
              help="sandboxes this node takes at most")
@click.option("--memory-mb", default=8192, show_default=True, type=click.IntRange(64),
              help="sandbox memory this node takes at most")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the cluster key (default: DATA_DIR/cluster.key; every node and replica holds the same)")
@click.option("--no-reconcile", is_flag=True,
              help="skip the start-up reconcile (several nodes on one shared machine: scripts/cluster-dev.sh)")
@click.option("--s3-endpoint", envvar="CELLBOX_S3_ENDPOINT", default=None, metavar="URL",
              help="S3-compatible store for suspend images (credentials: the AWS_* variables)")
@click.option("--s3-bucket", envvar="CELLBOX_S3_BUCKET", default=None, help="its bucket")
@click.pass_context
def node(ctx: click.Context, cluster: str | None, node_id: str | None, listen: str | None, capacity: int,
         memory_mb: int, key_file: Path | None, no_reconcile: bool, s3_endpoint: str | None,
         s3_bucket: str | None) -> None:
    """Join a cluster: register, heartbeat, and run the sandboxes the control plane places here.

    Data dir, pool, bridge, subnet, nft table, runc root and run dir come from the
    CELLBOX_* variables (cellbox.config), so several nodes can share one machine.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..cluster.node_main import NodeOptions, run

    for value, name in ((cluster, "--cluster"), (node_id, "--id"), (listen, "--listen")):
        if not value:
            raise click.UsageError(f"{name} is required to run a node")
    assert cluster and node_id and listen
    _check(cluster)
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise click.BadParameter(f"{listen!r}: expected HOST:PORT", param_hint="--listen")
    if (s3_endpoint is None) != (s3_bucket is None):
        raise click.UsageError("--s3-endpoint and --s3-bucket go together")
    run(NodeOptions(cluster, node_id, listen, capacity, memory_mb, key_file, reconcile=not no_reconcile,
                    s3_endpoint=s3_endpoint, s3_bucket=s3_bucket))


def _check(cluster: str) -> None:
    from ..cluster.db import check_dsn
    from ..errors import InvalidRequest

    try:
        check_dsn(cluster)
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message, param_hint="--cluster") from None


@node.command()
@click.argument("node_name")
@click.option("--cluster", envvar="CELLBOX_CLUSTER", required=True, metavar="POSTGRESQL_URL")
@click.option("--undo", is_flag=True, help="take the node back (new sandboxes may land on it again)")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {node, moved, left, undo}.")
def drain(node_name: str, cluster: str, undo: bool, as_json: bool) -> None:
    """Move the running sandboxes off NODE_NAME (live migration) and place nothing new on it."""
    import asyncio
    import json

    from ..cluster.control import ControlPlane
    from ..errors import CellboxError

    _check(cluster)

    async def go() -> dict[str, list[str]]:
        control = ControlPlane(cluster)
        await control.start()  # its NOTIFY listener wakes the waits
        try:
            return await control.drain(node_name, undo=undo)
        finally:
            await control.close()
    try:
        out = asyncio.run(go())
    except CellboxError as exc:
        raise click.ClickException(exc.message) from None
    if as_json:
        click.echo(json.dumps({"node": node_name, "undo": undo, **out}, indent=2, sort_keys=True))
        return
    for line in out["moved"]:
        click.echo(f"moved {line}")
    for sid in out["left"]:
        click.echo(f"left {sid} (ephemeral, and its live migration failed: it ends there)")
    click.echo(f"node {node_name}: {'taking sandboxes again' if undo else 'drained'}")


@click.command()
@click.argument("sandbox")
@click.option("--to", "to", default=None, metavar="NODE", help="the target node (default: the scheduler picks)")
@click.option("--cluster", envvar="CELLBOX_CLUSTER", required=True, metavar="POSTGRESQL_URL")
@click.option("--json", "as_json", is_flag=True, help="print {id, from, to} as JSON")
def migrate(sandbox: str, to: str | None, cluster: str, as_json: bool) -> None:
    """Live-migrate the running sandbox SANDBOX (its ID) to another node of the cluster:
    same ID, name, files, memory and processes (CRIU post-copy; docs/cluster.md)."""
    import asyncio

    from ..cluster.control import ControlPlane
    from ..errors import CellboxError

    _check(cluster)

    async def go() -> tuple[str | None, str | None]:
        control = ControlPlane(cluster)
        await control.start()
        try:
            before = (await control.get(None, sandbox)).node_id  # type: ignore[arg-type]
            after = await control.migrate(None, sandbox, to)
            return before, after.node_id
        finally:
            await control.close()
    try:
        before, after = asyncio.run(go())
    except CellboxError as exc:
        raise click.ClickException(exc.message) from None
    if as_json:
        import json

        click.echo(json.dumps({"id": sandbox, "from": before, "to": after}))
        return
    click.echo(f"migrated {sandbox}: {before} -> {after}")
