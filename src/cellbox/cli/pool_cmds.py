"""``cellbox pool …``: a project's named warm pools (Tensorlake's ``sandbox-pools``)."""

from __future__ import annotations

from typing import Any

import click

from .sandbox_cmds import api_url_option, client, format_time, handle_errors, json_option, print_json, print_table

POOL_COLUMNS = ["ID", "Image", "CPUs", "Memory", "Warm", "Max", "Idle", "Running", "Created At"]


def _row(p: dict[str, Any]) -> list[Any]:
    containers = p.get("containers") or []
    return [p["id"], p["image"], f"{p['resources']['cpus']:g}", f"{p['resources']['memory_mb']} MB",
            p["warm_containers"], p.get("max_containers"), sum(c["state"] == "Idle" for c in containers),
            sum(c["state"] == "Running" for c in containers), format_time(p.get("created_at"))]


def _definition(fn: Any) -> Any:
    for option in reversed([
        click.option("-i", "--image", default="cellbox/debian", show_default=True, help="Image of the pool."),
        click.option("-c", "--cpus", type=float, default=1.0, show_default=True),
        click.option("-m", "--memory", "memory_mb", type=int, default=1024, show_default=True, help="MB."),
        click.option("--disk-mb", "disk_mb", type=int, default=None, help="Root disk in MB."),
        click.option("-t", "--timeout", "timeout_secs", type=int, default=0, help="Sandbox lifetime [none]."),
        click.option("-w", "--warm", "warm_containers", type=int, default=0, help="Sandboxes kept booted."),
        click.option("--max", "max_containers", type=int, default=None, help="Most sandboxes in use at once."),
        click.option("-N", "--no-internet", is_flag=True, help="Block all egress of its sandboxes."),
    ]):
        fn = option(fn)
    return fn


def _network(no_internet: bool) -> Any:
    from ..sdk._shared import KEEP

    return {"allow_internet_access": False, "allow_out": [], "deny_out": []} if no_internet else KEEP


@click.group("pool")
def pool() -> None:
    """Named warm pools: claim a running sandbox in milliseconds."""


@pool.command("create")
@_definition
@api_url_option
@json_option
@handle_errors
def pool_create(image: str, cpus: float, memory_mb: int, disk_mb: int | None, timeout_secs: int,
                warm_containers: int, max_containers: int | None, no_internet: bool, api_url: str | None,
                as_json: bool) -> None:
    with client(api_url) as c:
        info = c.pools.create(image, cpus=cpus, memory_mb=memory_mb, disk_mb=disk_mb, timeout_secs=timeout_secs,
                              warm_containers=warm_containers, max_containers=max_containers,
                              network=_network(no_internet))
    print_json(info) if as_json else click.echo(info["id"])


@pool.command("ls")
@api_url_option
@json_option
@handle_errors
def pool_ls(api_url: str | None, as_json: bool) -> None:
    with client(api_url) as c:
        pools = [c.pools.get(p["id"]) for p in c.pools.list()]
    print_json(pools) if as_json else print_table(POOL_COLUMNS, [_row(p) for p in pools])


@pool.command("describe")
@click.argument("pool_id")
@api_url_option
@json_option
@handle_errors
def pool_describe(pool_id: str, api_url: str | None, as_json: bool) -> None:
    with client(api_url) as c:
        info = c.pools.get(pool_id)
    print_json(info) if as_json else print_table(POOL_COLUMNS, [_row(info)])


@pool.command("update")
@click.argument("pool_id")
@_definition
@api_url_option
@json_option
@handle_errors
def pool_update(pool_id: str, image: str, cpus: float, memory_mb: int, disk_mb: int | None, timeout_secs: int,
                warm_containers: int, max_containers: int | None, no_internet: bool, api_url: str | None,
                as_json: bool) -> None:
    """Replace POOL_ID's definition (its warm sandboxes are rebuilt)."""
    with client(api_url) as c:
        info = c.pools.update(pool_id, image, cpus=cpus, memory_mb=memory_mb, disk_mb=disk_mb,
                              timeout_secs=timeout_secs, warm_containers=warm_containers,
                              max_containers=max_containers, network=_network(no_internet))
    print_json(info) if as_json else click.echo(info["id"])


@pool.command("rm")
@click.argument("pool_id")
@api_url_option
@json_option
@handle_errors
def pool_rm(pool_id: str, api_url: str | None, as_json: bool) -> None:
    with client(api_url) as c:
        c.pools.delete(pool_id)
    print_json({"id": pool_id, "deleted": True}) if as_json else click.echo(pool_id)


@pool.command("claim")
@click.argument("pool_id")
@api_url_option
@json_option
@handle_errors
def pool_claim(pool_id: str, api_url: str | None, as_json: bool) -> None:
    """Claim a running sandbox of POOL_ID; prints its ID."""
    with client(api_url) as c:
        info = c.pools.claim(pool_id)
    print_json(info.raw) if as_json else click.echo(info.id)
