"""``cellbox suspend``, ``resume``, ``snapshot`` (``checkpoint``) and ``clone`` (``copy``).

The memory-state verbs (spec §2.5-§2.7, §6). ``snapshot`` is a group: ``snapshot SBX``
takes a snapshot (short for ``snapshot create SBX``), ``snapshot ls`` lists them and
``snapshot rm`` deletes them. Starting a sandbox from a snapshot is ``new --snapshot``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ._common import (
    api_url_option, client, for_each, format_time, handle_errors, json_option, print_json, print_table,
)

if TYPE_CHECKING:
    from ..sdk import SnapshotInfo


def _timeout_option(default: float, what: str) -> Any:
    return click.option(
        "-t", "--timeout", type=float, default=default, show_default=True, help=f"Seconds to wait for {what}."
    )


# -- suspend / resume ---------------------------------------------------------------------------


@click.command("suspend")
@click.argument("sandbox")
@click.option("-n", "--no-wait", is_flag=True, help="Return once the suspend has started.")
@_timeout_option(300.0, "the sandbox to be suspended")
@api_url_option
@json_option
@handle_errors
def suspend(sandbox: str, no_wait: bool, timeout: float, api_url: str | None, as_json: bool) -> None:
    """Suspend a named sandbox: memory and files go to disk, nothing runs. Prints its ID."""
    with client(api_url) as c:
        info = c.suspend(sandbox, wait=not no_wait, timeout=timeout)
    if as_json:
        print_json(info.raw)
    else:
        click.echo(info.id)


@click.command("resume")
@click.argument("sandbox")
@click.option("-n", "--no-wait", is_flag=True, help="Return once the resume has started.")
@_timeout_option(300.0, "the sandbox to be running")
@api_url_option
@json_option
@handle_errors
def resume(sandbox: str, no_wait: bool, timeout: float, api_url: str | None, as_json: bool) -> None:
    """Resume a suspended sandbox where it left off. Prints its ID."""
    with client(api_url) as c:
        info = c.resume(sandbox, wait=not no_wait, timeout=timeout)
    if as_json:
        print_json(info.raw)
    else:
        click.echo(info.id)


# -- snapshots ----------------------------------------------------------------------------------


class _DefaultCommandGroup(click.Group):
    """A group that runs ``default`` when its first argument is not one of its commands:
    ``snapshot SBX`` is ``snapshot create SBX``."""

    def __init__(self, *args: Any, default: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        return super().parse_args(ctx, args)


@click.group("snapshot", cls=_DefaultCommandGroup, default="create")
def snapshot() -> None:
    """Take, list or delete snapshots.

    \b
      cellbox snapshot SBX [--type memory]   take one (same as: snapshot create SBX)
      cellbox snapshot ls [SBX]              list them (all, or those of SBX)
      cellbox snapshot rm SNAP...            delete them

    A snapshot outlives its sandbox; start sandboxes from it with
    cellbox new --snapshot SNAP.
    """


@snapshot.command("create")
@click.argument("sandbox")
@click.option(
    "--type",
    "--checkpoint-type",
    "snapshot_type",
    type=click.Choice(["filesystem", "memory"]),
    default="filesystem",
    show_default=True,
    help="filesystem: the files; memory: the files and the running processes.",
)
@click.option("-n", "--no-wait", is_flag=True, help="Print the ID at once, without waiting for completion.")
@_timeout_option(300.0, "the snapshot to complete")
@api_url_option
@json_option
@handle_errors
def snapshot_create(
    sandbox: str, snapshot_type: str, no_wait: bool, timeout: float, api_url: str | None, as_json: bool
) -> None:
    """Snapshot a running sandbox (it runs on) and print the snapshot's ID."""
    with client(api_url) as c:
        info = c.snapshot(sandbox, snapshot_type, wait=not no_wait, timeout=timeout)
    if as_json:
        print_json(info.raw)
    else:
        click.echo(info.id)


def _size(value: int | None) -> str | None:
    if value is None:
        return None
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _snapshot_row(info: SnapshotInfo) -> list[Any]:
    return [
        info.id,
        info.sandbox_id,
        info.snapshot_type,
        info.status,
        info.base_image,
        _size(info.size_bytes),
        format_time(info.created_at),
    ]


@snapshot.command("ls")
@click.argument("sandbox", required=False)
@click.option("-q", "--quiet", is_flag=True, help="Print IDs only.")
@api_url_option
@json_option
@handle_errors
def snapshot_ls(sandbox: str | None, quiet: bool, api_url: str | None, as_json: bool) -> None:
    """List snapshots (only those of SANDBOX, if given)."""
    with client(api_url) as c:
        infos = c.list_snapshots(sandbox)
    if as_json:
        print_json([i.raw for i in infos])
    elif quiet:
        for info in infos:
            click.echo(info.id)
    else:
        columns = ["ID", "Sandbox", "Type", "Status", "Image", "Size", "Created At"]
        print_table(columns, (_snapshot_row(i) for i in infos))


@snapshot.command("rm")
@click.argument("snapshots", nargs=-1, required=True)
@api_url_option
@json_option
@handle_errors
def snapshot_rm(snapshots: tuple[str, ...], api_url: str | None, as_json: bool) -> None:
    """Delete one or more snapshots; prints each ID (one already gone counts as deleted)."""
    with client(api_url) as c:
        for_each(snapshots, c.delete_snapshot, as_json)


# -- copies -------------------------------------------------------------------------------------


@click.command("clone")
@click.argument("sandbox")
@click.option("-n", "--times", type=click.IntRange(1, 64), default=1, show_default=True, help="How many copies.")
@_timeout_option(300.0, "the copies to be running")
@api_url_option
@json_option
@handle_errors
def clone(sandbox: str, times: int, timeout: float, api_url: str | None, as_json: bool) -> None:
    """Start N live copies of a running sandbox (files and processes); print their IDs.

    If some copies fail, those that started are still printed (they are running), the
    failure goes to stderr, and the exit status is 1.
    """
    from ..sdk import CopyError

    with client(api_url) as c:
        try:
            infos = c.copy(sandbox, times, startup_timeout=timeout)
        except CopyError as exc:
            _print_copies(exc.sandboxes, as_json)
            raise
    _print_copies(infos, as_json)


def _print_copies(infos: list[Any], as_json: bool) -> None:
    if as_json:
        print_json([i.raw for i in infos])
    else:
        for info in infos:
            click.echo(info.id)
