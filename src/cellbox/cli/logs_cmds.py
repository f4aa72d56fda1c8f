"""``cellbox logs``, ``cellbox resize`` and ``cellbox archived`` (issue 14): a sandbox's
output with Tensorlake's filters, a live resize, and terminated sandboxes still kept."""

from __future__ import annotations

import click

from .sandbox_cmds import (SANDBOX_COLUMNS, api_url_option, client, format_time, handle_errors, json_option,
                           print_json, print_table, sandbox_row)


@click.command("logs")
@click.argument("sandbox")
@click.option("-l", "--level", "levels", multiple=True, metavar="LEVEL", help="trace..fatal or 1-6 (repeatable).")
@click.option("-p", "--process", "process_ids", multiple=True, metavar="PID", help="Only this process (repeatable).")
@click.option("-g", "--grep", "body", default=None, metavar="TEXT", help="Only lines containing TEXT.")
@click.option("--head", type=click.IntRange(0), default=None, help="Only the first N lines.")
@click.option("--tail", type=click.IntRange(0), default=None, help="Only the last N lines.")
@click.option("--processes", "list_processes", is_flag=True, help="List the processes that printed something.")
@api_url_option
@json_option
@handle_errors
def logs(sandbox: str, levels: tuple[str, ...], process_ids: tuple[str, ...], body: str | None, head: int | None,
         tail: int | None, list_processes: bool, api_url: str | None, as_json: bool) -> None:
    """What SANDBOX's entrypoint and processes printed (kept after it ends)."""
    with client(api_url) as c:
        if list_processes:
            procs = c.log_processes(sandbox)
            if as_json:
                print_json(procs)
                return
            print_table(["Process", "Command", "Lines", "First", "Last"],
                        [[p["processId"], p["processCommand"], p["logCount"], format_time(p["firstSeen"]),
                          format_time(p["lastSeen"])] for p in procs])
            return
        entries = c.logs(sandbox, levels=levels, process_ids=process_ids, body=body, head=head, tail=tail)
    if as_json:
        print_json(entries)
        return
    for e in entries:
        click.echo(e["body"])


@click.command("resize")
@click.argument("sandbox")
@click.option("-c", "--cpus", type=float, default=None, help="New vCPUs.")
@click.option("-m", "--memory", "memory_mb", type=int, default=None, help="New memory in MB.")
@click.option("--disk-mb", "--disk_mb", "disk_mb", type=int, default=None, help="New root disk in MB (grow only).")
@api_url_option
@json_option
@handle_errors
def resize(sandbox: str, cpus: float | None, memory_mb: int | None, disk_mb: int | None, api_url: str | None,
           as_json: bool) -> None:
    """Resize a running SANDBOX in place (no restart)."""
    if cpus is None and memory_mb is None and disk_mb is None:
        raise click.UsageError("give at least one of --cpus, --memory, --disk-mb")
    with client(api_url) as c:
        info = c.resize(sandbox, cpus=cpus, memory_mb=memory_mb, disk_mb=disk_mb)
    if as_json:
        print_json(info.raw)
        return
    gen = info.raw.get("resource_resize", {}).get("generation")
    click.echo(f"{info.id}: {info.cpus:g} vCPUs, {info.memory_mb} MB memory, {info.disk_mb} MB disk "
               f"(resize generation {gen})")


@click.group("archived")
def archived() -> None:
    """Terminated sandboxes, readable for the server's retention period."""


@archived.command("ls")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=100)
@api_url_option
@json_option
@handle_errors
def archived_ls(limit: int, api_url: str | None, as_json: bool) -> None:
    with client(api_url) as c:
        infos = c.list_archived(limit=limit)
    if as_json:
        print_json([i.raw for i in infos])
        return
    print_table([*SANDBOX_COLUMNS, "Archived At"], [[*sandbox_row(i), format_time(i.raw.get("archived_at"))]
                                                     for i in infos])


@archived.command("describe")
@click.argument("sandbox_id")
@api_url_option
@json_option
@handle_errors
def archived_describe(sandbox_id: str, api_url: str | None, as_json: bool) -> None:
    with client(api_url) as c:
        info = c.get_archived(sandbox_id)
    if as_json:
        print_json(info.raw)
        return
    print_table([*SANDBOX_COLUMNS, "Archived At"], [[*sandbox_row(info), format_time(info.raw.get("archived_at"))]])
