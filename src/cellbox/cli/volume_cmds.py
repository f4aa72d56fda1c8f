"""``cellbox fs``: volumes (create, ls, rm, snapshot, snapshots, fork) and their mounts in
sandboxes (attach, detach), with Tensorlake's ``tl fs attach|detach|ls`` flags."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import click

from .sandbox_cmds import (
    api_url_option, client, for_each, format_time, handle_errors, json_option, print_json, print_table,
)

if TYPE_CHECKING:
    from ..sdk import SandboxInfo, VolumeInfo


def _vol_json(v: VolumeInfo) -> dict[str, Any]:
    return dataclasses.asdict(v)


def _mounts(info: SandboxInfo, as_json: bool) -> None:
    if as_json:
        print_json(info.file_systems)
        return
    print_table(["Volume", "Mount Path", "Mode", "Version"],
                [[m["file_system_id"], m["mount_path"], "ro" if m.get("read_only") else "rw", m.get("snapshot_id")]
                 for m in info.file_systems])


@click.group("fs")
def fs() -> None:
    """Volumes: persistent, versioned file systems mounted into sandboxes.

    \b
      cellbox fs create NAME [--size-mb N]
      cellbox fs ls [SANDBOX] | rm NAME... | snapshot NAME [-m MSG] | snapshots NAME
      cellbox fs fork NAME NEW_NAME [--snapshot ID]
      cellbox fs attach SANDBOX --id NAME -p PATH [--read-only] [--snapshot ID]
      cellbox fs detach SANDBOX -p PATH
    """


@fs.command("create")
@click.argument("name")
@click.option("--size-mb", type=click.IntRange(min=1), help="Size limit in MiB [server default: 1024].")
@api_url_option
@json_option
@handle_errors
def create(name: str, size_mb: int | None, api_url: str | None, as_json: bool) -> None:
    """Create an empty volume; prints its name."""
    with client(api_url) as c:
        vol = c.volumes.create(name, size_mb=size_mb)
    print_json(_vol_json(vol)) if as_json else click.echo(vol.name)


@fs.command("ls")
@click.argument("sandbox", required=False)
@api_url_option
@json_option
@handle_errors
def ls(sandbox: str | None, api_url: str | None, as_json: bool) -> None:
    """List the project's volumes, or (with SANDBOX) what is mounted in that sandbox."""
    with client(api_url) as c:
        if sandbox is not None:
            _mounts(c.get(sandbox), as_json)
            return
        vols = c.volumes.list()
    if as_json:
        print_json([_vol_json(v) for v in vols])
        return
    print_table(["Name", "ID", "Size MB", "Mounted By", "Created At"],
                [[v.name, v.id, v.size_mb, ", ".join(f"{m.sandbox_id}:{m.mount_path}{':ro' if m.read_only else ''}"
                                                      for m in v.mounts) or None, format_time(v.created_at)]
                 for v in vols])


@fs.command("rm")
@click.argument("names", nargs=-1, required=True)
@api_url_option
@json_option
@handle_errors
def rm(names: tuple[str, ...], api_url: str | None, as_json: bool) -> None:
    """Delete volumes and their versions (refused while mounted)."""
    with client(api_url) as c:
        if not as_json:
            for_each(names, c.volumes.delete)
            return
        for name in names:  # --json: all or the first error (handle_errors prints it)
            c.volumes.delete(name)
    print_json({"deleted": list(names)})


@fs.command("snapshot")
@click.argument("name")
@click.option("-m", "--message", default="", help="A note kept with the version.")
@api_url_option
@json_option
@handle_errors
def snapshot(name: str, message: str, api_url: str | None, as_json: bool) -> None:
    """Freeze the volume as a read-only version; prints the version's ID."""
    with client(api_url) as c:
        ver = c.volumes.snapshot(name, message)
    print_json(dataclasses.asdict(ver)) if as_json else click.echo(ver.snapshot_id)


@fs.command("snapshots")
@click.argument("name")
@api_url_option
@json_option
@handle_errors
def snapshots(name: str, api_url: str | None, as_json: bool) -> None:
    """List a volume's versions."""
    with client(api_url) as c:
        vers = c.volumes.snapshots(name)
    if as_json:
        print_json([dataclasses.asdict(v) for v in vers])
        return
    print_table(["Snapshot ID", "Message", "Created At"], [[v.snapshot_id, v.message, format_time(v.created_at)]
                                                          for v in vers])


@fs.command("fork")
@click.argument("name")
@click.argument("new_name")
@click.option("--snapshot", "snapshot_id", help="Fork this version [default: the volume as it is now].")
@click.option("--size-mb", type=click.IntRange(min=1), help="Size limit of the fork [default: the origin's].")
@api_url_option
@json_option
@handle_errors
def fork(name: str, new_name: str, snapshot_id: str | None, size_mb: int | None, api_url: str | None,
         as_json: bool) -> None:
    """A new writable volume from NAME (O(1)); prints its name."""
    with client(api_url) as c:
        vol = c.volumes.fork(name, new_name, snapshot_id=snapshot_id, size_mb=size_mb)
    print_json(_vol_json(vol)) if as_json else click.echo(vol.name)


@fs.command("attach")
@click.argument("sandbox")
@click.option("--id", "volume", required=True, help="The volume's name or ID.")
@click.option("-p", "--path", "mount_path", required=True, help="Where in the sandbox (absolute).")
@click.option("--read-only", is_flag=True, help="Mount it read-only (any number of sandboxes may).")
@click.option("--snapshot", "snapshot_id", help="Mount this version (read-only).")
@click.option("--prefetch", is_flag=True, help="Accepted for Tensorlake's CLI; volumes are local.")
@api_url_option
@json_option
@handle_errors
def attach(sandbox: str, volume: str, mount_path: str, read_only: bool, snapshot_id: str | None, prefetch: bool,
           api_url: str | None, as_json: bool) -> None:
    """Mount a volume into a running sandbox."""
    with client(api_url) as c:
        info = c.volumes.attach(sandbox, volume, mount_path, read_only=read_only or snapshot_id is not None,
                                snapshot_id=snapshot_id)
    _mounts(info, as_json)


@fs.command("detach")
@click.argument("sandbox")
@click.option("-p", "--path", "mount_path", required=True, help="The mount path to take out.")
@api_url_option
@json_option
@handle_errors
def detach(sandbox: str, mount_path: str, api_url: str | None, as_json: bool) -> None:
    """Unmount a volume from a running sandbox (refused while a process uses it)."""
    with client(api_url) as c:
        info = c.volumes.detach(sandbox, mount_path)
    _mounts(info, as_json)
