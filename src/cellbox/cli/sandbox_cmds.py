"""The lifecycle verbs of the ``cellbox`` CLI, mirroring Tensorlake's ``tl sbx``:
``new``, ``ls``, ``describe``, ``terminate``, ``name``, ``update``, ``port``.

Every verb is added to the root group in one place, ``main.py``'s table; the helpers
the command modules share are in ``_common.py`` (re-exported here for callers of the
old location).
"""

from __future__ import annotations

from typing import Any

import click

from ._common import (SANDBOX_COLUMNS, api_url_option, client, exit_status, for_each, format_time, handle_errors, json_option,
                      parse_env, print_json, print_table, sandbox_row)

__all__ = ["api_url_option", "client", "exit_status", "for_each", "format_time", "handle_errors", "json_option",
           "parse_env", "print_json", "print_table", "sandbox_row"]


# -- lifecycle verbs --------------------------------------------------------------------------


@click.command("new")
@click.argument("name", required=False)
@click.option("-c", "--cpus", type=float, default=None, help="vCPUs [1.0, or the snapshot's].")
@click.option("-m", "--memory", "memory_mb", type=int, default=None, help="Memory in MB [1024, or the snapshot's].")
@click.option("--disk_mb", "--disk-mb", "disk_mb", type=int, default=None, help="Root disk in MB [server default].")
@click.option("-t", "--timeout", "timeout_secs", type=int, default=None, help="Lifetime in seconds [no limit].")
@click.option("-i", "--image", default=None, help="Image [server default].")
@click.option("-n", "--no-wait", is_flag=True, help="Return as soon as the server accepted the request.")
@click.option("-x", "--expose", "expose", type=int, multiple=True, help="Expose a port through the proxy (repeatable).")
@click.option("-e", "--entrypoint", multiple=True, help="Entrypoint argv word (repeatable).")
@click.option("-N", "--no-internet", is_flag=True, help="Block all egress, DNS included.")
@click.option("-A", "--network-allow", "allow_out", multiple=True, metavar="IP|CIDR|HOST",
              help="Allow egress only to these (repeatable; the resolver stays reachable).")
@click.option("-D", "--network-deny", "deny_out", multiple=True, metavar="IP|CIDR|HOST",
              help="Deny egress to these (repeatable; deny beats allow).")
@click.option("-s", "--snapshot", "snapshot_id", default=None, metavar="SNAPSHOT_ID", help="Start from a snapshot.")
@click.option("--public", is_flag=True,
              help="Let requests without an API key reach the exposed ports (allow_unauthenticated_access).")
@click.option("--secret", "secret_names", multiple=True, metavar="NAME",
              help="A project secret to give every process as an environment variable (repeatable).")
@api_url_option
@json_option
@handle_errors
def new(
    name: str | None,
    cpus: float | None,
    memory_mb: int | None,
    disk_mb: int | None,
    timeout_secs: int | None,
    image: str | None,
    no_wait: bool,
    expose: tuple[int, ...],
    entrypoint: tuple[str, ...],
    no_internet: bool,
    allow_out: tuple[str, ...],
    deny_out: tuple[str, ...],
    snapshot_id: str | None,
    public: bool,
    secret_names: tuple[str, ...],
    api_url: str | None,
    as_json: bool,
) -> None:
    """Create a sandbox (named if NAME is given) and print its ID.

    With ``--snapshot`` it starts from that snapshot: its files and, for a memory
    snapshot, its running processes.
    """
    with client(api_url) as c:
        info = c.create(
            image,
            cpus,
            memory_mb,
            disk_mb,
            timeout_secs,
            name,
            list(entrypoint) or None,
            list(expose) or None,
            allow_unauthenticated_access=True if public else None,  # exposed ports need a key by default
            secret_names=list(secret_names) or None,
            allow_internet_access=not no_internet,
            allow_out=list(allow_out) or None,
            deny_out=list(deny_out) or None,
            snapshot_id=snapshot_id,
            wait=not no_wait,
        )
    if as_json:
        print_json(info.raw)
    else:
        click.echo(info.id)


@click.command("ls")
@click.option("-a", "--all", "show_all", is_flag=True, help="Include terminated sandboxes.")
@click.option("-r", "--running", is_flag=True, help="Only running sandboxes.")
@click.option("-s", "--suspended", is_flag=True, help="Only suspended sandboxes.")
@click.option("-t", "--archived", is_flag=True, help="Archived (terminated) sandboxes instead.")
@click.option("-q", "--quiet", is_flag=True, help="Print IDs only.")
@api_url_option
@json_option
@handle_errors
def ls(show_all: bool, running: bool, suspended: bool, archived: bool, quiet: bool, api_url: str | None,
       as_json: bool) -> None:
    """List sandboxes."""
    with client(api_url) as c:
        # The server lists live sandboxes only unless asked for "all" (or a status).
        infos = (c.list_archived(limit=1000) if archived else
                 c.list(status="running" if running else "suspended" if suspended else "all" if show_all else None))
    if running or suspended:
        infos = [i for i in infos if i.status == ("running" if running else "suspended")]
    elif not show_all and not archived:
        infos = [i for i in infos if i.status not in ("terminated", "failed")]
    if as_json:
        print_json([i.raw for i in infos])
    elif quiet:
        for info in infos:
            click.echo(info.id)
    else:
        print_table(SANDBOX_COLUMNS, (sandbox_row(i) for i in infos))


@click.command("describe")
@click.argument("sandbox")
@api_url_option
@json_option
@handle_errors
def describe(sandbox: str, api_url: str | None, as_json: bool) -> None:
    """Show one sandbox (by ID or name)."""
    with client(api_url) as c:
        info = c.get(sandbox)
    if as_json:
        print_json(info.raw)
        return
    rows = [
        ("ID", info.id),
        ("Name", info.name),
        ("Status", info.status),
        ("Image", info.image),
        ("CPUs", f"{info.cpus:g}" if info.cpus is not None else None),
        ("Memory", f"{info.memory_mb} MB" if info.memory_mb is not None else None),
        ("Disk", f"{info.disk_mb} MB" if info.disk_mb is not None else None),
        ("Timeout", f"{info.timeout_secs} s" if info.timeout_secs else "none"),
        ("Exposed ports", ", ".join(map(str, info.exposed_ports)) or None),
        ("Network", _describe_network(info.raw.get("network_policy"))),
        ("Created At", format_time(info.created_at)),
        ("Terminated At", format_time(info.terminated_at) if info.terminated_at else None),
        ("Termination reason", info.termination_reason),
        ("Sandbox URL", info.sandbox_url),
    ]
    print_table(["Field", "Value"], [r for r in rows if r[1] is not None])


@click.command("terminate")
@click.argument("sandboxes", nargs=-1, required=True)
@api_url_option
@json_option
@handle_errors
def terminate(sandboxes: tuple[str, ...], api_url: str | None, as_json: bool) -> None:
    """Terminate one or more sandboxes."""
    with client(api_url) as c:
        for_each(sandboxes, c.delete, as_json)


@click.command("name")
@click.argument("sandbox")
@click.argument("new_name")
@api_url_option
@json_option
@handle_errors
def name(sandbox: str, new_name: str, api_url: str | None, as_json: bool) -> None:
    """Name (or rename) a sandbox; named sandboxes can be found by name."""
    with client(api_url) as c:
        info = c.update(sandbox, name=new_name)
    if as_json:
        print_json(info.raw)
    else:
        click.echo(f"{info.id} {info.name}")


def _describe_network(policy: dict[str, Any] | None) -> str:
    if not policy:
        return "unrestricted"
    parts = []
    if not policy.get("allow_internet_access", True):
        parts.append("no internet")
    if policy.get("allow_out"):
        parts.append("allow " + ", ".join(policy["allow_out"]))
    if policy.get("deny_out"):
        parts.append("deny " + ", ".join(policy["deny_out"]))
    return "; ".join(parts) or "unrestricted"


@click.command("update")
@click.argument("sandbox")
@click.option("-N", "--no-internet", is_flag=True, help="Block all egress, DNS included.")
@click.option("-A", "--network-allow", "allow_out", multiple=True, metavar="IP|CIDR|HOST",
              help="Allow egress only to these (repeatable).")
@click.option("-D", "--network-deny", "deny_out", multiple=True, metavar="IP|CIDR|HOST",
              help="Deny egress to these (repeatable; deny beats allow).")
@click.option("--clear-network", is_flag=True, help="Remove the egress policy (unrestricted).")
@api_url_option
@json_option
@handle_errors
def update(sandbox: str, no_internet: bool, allow_out: tuple[str, ...], deny_out: tuple[str, ...],
           clear_network: bool, api_url: str | None, as_json: bool) -> None:
    """Replace a running sandbox's egress policy, without restarting it.

    The new policy replaces the old one as a whole (atomically); connections already
    open stay open.
    """
    if clear_network and (no_internet or allow_out or deny_out):
        raise click.UsageError("--clear-network cannot be combined with -N, -A or -D")
    if not (clear_network or no_internet or allow_out or deny_out):
        raise click.UsageError("nothing to update: give -N, -A, -D or --clear-network")
    from ..sdk._shared import network_body

    network = None if clear_network else network_body(not no_internet, allow_out, deny_out)
    with client(api_url) as c:
        info = c.update(sandbox, network=network)
    if as_json:
        print_json(info.raw)
    else:
        click.echo(f"{info.id} {_describe_network(info.raw.get('network_policy'))}")


@click.group("port")
def port() -> None:
    """List, expose or remove the ports the proxy routes to a sandbox."""


@port.command("ls")
@click.argument("sandbox")
@api_url_option
@json_option
@handle_errors
def port_ls(sandbox: str, api_url: str | None, as_json: bool) -> None:
    """List a sandbox's exposed ports."""
    with client(api_url) as c:
        info = c.get(sandbox)
    if as_json:
        print_json(info.exposed_ports)
    else:
        for p in info.exposed_ports:
            click.echo(p)


@port.command("expose")
@click.argument("sandbox")
@click.argument("ports", nargs=-1, type=int, required=True)
@api_url_option
@json_option
@handle_errors
def port_expose(sandbox: str, ports: tuple[int, ...], api_url: str | None, as_json: bool) -> None:
    """Expose PORTS (in addition to those already exposed)."""
    with client(api_url) as c:
        info = c.get(sandbox)
        info = c.update(info.id, exposed_ports=set(info.exposed_ports) | set(ports), allow_unauthenticated_access=True)
    if as_json:
        print_json(info.exposed_ports)
    else:
        click.echo(" ".join(map(str, info.exposed_ports)))


@port.command("rm")
@click.argument("sandbox")
@click.argument("ports", nargs=-1, type=int, required=True)
@api_url_option
@json_option
@handle_errors
def port_rm(sandbox: str, ports: tuple[int, ...], api_url: str | None, as_json: bool) -> None:
    """Stop exposing PORTS."""
    with client(api_url) as c:
        info = c.get(sandbox)
        info = c.update(info.id, exposed_ports=set(info.exposed_ports) - set(ports))
    if as_json:
        print_json(info.exposed_ports)
    else:
        click.echo(" ".join(map(str, info.exposed_ports)))
