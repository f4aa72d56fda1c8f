"""Sandbox commands of the ``cellbox`` CLI, mirroring Tensorlake's ``tl sbx`` verbs.

``register(cli)`` adds every verb to the root group. This module holds the lifecycle
verbs (``new``, ``ls``, ``describe``, ``terminate``, ``name``, ``port``) and the helpers
the other command modules share; ``process_cmds`` (exec, run, ps, kill), ``file_cmds``
(cp), ``terminal_cmds`` (ssh, tunnel) and ``memstate_cmds`` (suspend, resume, snapshot,
clone) hold the rest. All of them use the sync SDK
only, imported inside the commands so ``cellbox setup`` never loads httpx.
"""

from __future__ import annotations

import datetime
import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..sdk import SandboxClient, SandboxInfo

F = TypeVar("F", bound=Callable[..., Any])


# -- shared helpers -------------------------------------------------------------------------


def _keep_api_key(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta["cellbox.api_key"] = value


def api_url_option(fn: F) -> F:
    """``--api-url`` and ``--api-key`` for every verb that talks to the server. The key
    is not a parameter of the verbs: ``client()`` reads it from the click context, and
    without it the SDK's lookup order applies (``cellbox.credentials``)."""
    fn = click.option(
        "--api-key",
        default=None,
        metavar="KEY",
        expose_value=False,
        callback=_keep_api_key,
        help="API key [else $CELLBOX_API_KEY, $TENSORLAKE_API_KEY, cellbox login's file, admin.key].",
    )(fn)
    return click.option(
        "--api-url",
        envvar="CELLBOX_API_URL",
        default=None,
        metavar="URL",
        help="Lifecycle API URL [env CELLBOX_API_URL; default http://localhost:8900].",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def handle_errors(fn: F) -> F:
    """Print SDK errors as one ``error:`` line on stderr and exit 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import CellboxError

        try:
            return fn(*args, **kwargs)
        except CellboxError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def client(api_url: str | None) -> SandboxClient:
    from ..sdk import SandboxClient

    ctx = click.get_current_context(silent=True)
    return SandboxClient(api_url, ctx.meta.get("cellbox.api_key") if ctx else None)


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected K=V, got {pair!r}", param_hint="-e/--env")
        env[key] = value
    return env


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def format_time(value: int | None) -> str:
    if not value:
        return "-"
    seconds = value / 1e6 if value > 1e14 else value / 1e3 if value > 1e11 else float(value)
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row))
    # On a terminal rich fits the table to its width; into a pipe, never cut or wrap a cell.
    console = Console() if sys.stdout.isatty() else Console(width=4096, no_color=True)
    console.print(table, overflow="ignore", crop=False)


def sandbox_row(info: SandboxInfo) -> list[Any]:
    return [
        info.id,
        info.name,
        info.status,
        info.image,
        f"{info.cpus:g}" if info.cpus is not None else None,
        f"{info.memory_mb} MB" if info.memory_mb is not None else None,
        f"{info.disk_mb} MB" if info.disk_mb is not None else None,
        format_time(info.created_at),
    ]


SANDBOX_COLUMNS = ["ID", "Name", "Status", "Image", "CPUs", "Memory", "Disk", "Created At"]


def for_each(refs: Sequence[str], action: Callable[[str], object]) -> None:
    """Apply ``action`` to every ref, printing each that worked and an error line for each
    that did not; exit 1 if any failed (the others are still done)."""
    from ..errors import CellboxError

    failed = False
    for ref in refs:
        try:
            action(ref)
        except CellboxError as exc:
            click.echo(f"error: {ref}: {exc.message}", err=True)
            failed = True
        else:
            click.echo(ref)
    if failed:
        sys.exit(1)


def exit_status(exit_code: int, signal: int | None) -> int:
    """The shell's convention: the exit code, or 128 + the signal that killed it."""
    if exit_code >= 0:
        return min(exit_code, 255)
    return 128 + (signal or -exit_code)


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
@handle_errors
def terminate(sandboxes: tuple[str, ...], api_url: str | None) -> None:
    """Terminate one or more sandboxes."""
    with client(api_url) as c:
        for_each(sandboxes, c.delete)


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
@handle_errors
def port_expose(sandbox: str, ports: tuple[int, ...], api_url: str | None) -> None:
    """Expose PORTS (in addition to those already exposed)."""
    with client(api_url) as c:
        info = c.get(sandbox)
        info = c.update(info.id, exposed_ports=set(info.exposed_ports) | set(ports), allow_unauthenticated_access=True)
    click.echo(" ".join(map(str, info.exposed_ports)))


@port.command("rm")
@click.argument("sandbox")
@click.argument("ports", nargs=-1, type=int, required=True)
@api_url_option
@handle_errors
def port_rm(sandbox: str, ports: tuple[int, ...], api_url: str | None) -> None:
    """Stop exposing PORTS."""
    with client(api_url) as c:
        info = c.get(sandbox)
        info = c.update(info.id, exposed_ports=set(info.exposed_ports) - set(ports))
    click.echo(" ".join(map(str, info.exposed_ports)))


def register(cli: click.Group) -> None:
    """Add every sandbox verb (and the tl-style aliases) to the root ``cellbox`` group."""
    from . import file_cmds, memstate_cmds, process_cmds, terminal_cmds

    verbs: list[tuple[click.Command, Sequence[str]]] = [
        (new, ("new", "create")),
        (ls, ("ls",)),
        (describe, ("describe", "info")),
        (terminate, ("terminate", "stop")),
        (name, ("name",)),
        (update, ("update",)),
        (port, ("port",)),
        (process_cmds.exec_, ("exec",)),
        (process_cmds.run, ("run",)),
        (process_cmds.ps, ("ps",)),
        (process_cmds.kill, ("kill",)),
        (file_cmds.cp, ("cp",)),
        (terminal_cmds.ssh, ("ssh",)),
        (terminal_cmds.tunnel, ("tunnel",)),
        (memstate_cmds.suspend, ("suspend",)),
        (memstate_cmds.resume, ("resume",)),
        (memstate_cmds.snapshot, ("snapshot", "checkpoint")),
        (memstate_cmds.clone, ("clone", "copy")),
    ]
    for command, names in verbs:
        for verb in names:
            cli.add_command(command, verb)
