"""Entry point of the ``cellbox`` command."""

from __future__ import annotations

import click

from collections.abc import Sequence

from . import door_cmds, file_cmds, logs_cmds, memstate_cmds, pool_cmds, process_cmds, sandbox_cmds, terminal_cmds
from .image_cmds import image
from .mcp_cmd import mcp
from .server_cmd import server
from .cluster_cmds import migrate, node
from .setup_cmd import setup
from .volume_cmds import fs


@click.group()
@click.version_option(package_name="cellbox")
def cli() -> None:
    """cellbox: self-hosted sandboxes for AI agents."""


# Every verb of the CLI, with its aliases (the tl-style names): the one place to add one.
VERBS: list[tuple[click.Command, Sequence[str]]] = [
    (setup, ("setup",)),
    (server, ("server",)),
    (node, ("node",)),  # cluster: one host of a cluster (cli/cluster_cmds.py)
    (migrate, ("migrate",)),  # cluster: live migration (cli/cluster_cmds.py)
    (image, ("image",)),
    (fs, ("fs",)),  # volumes (cli/volume_cmds.py)
    (sandbox_cmds.new, ("new", "create")),
    (sandbox_cmds.ls, ("ls",)),
    (sandbox_cmds.describe, ("describe", "info")),
    (sandbox_cmds.terminate, ("terminate", "stop")),
    (sandbox_cmds.name, ("name",)),
    (sandbox_cmds.update, ("update",)),
    (sandbox_cmds.port, ("port",)),
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
    (door_cmds.key, ("key",)),
    (door_cmds.secret, ("secret",)),
    (door_cmds.quota, ("quota",)),
    (door_cmds.audit, ("audit",)),
    (door_cmds.login, ("login",)),
    (door_cmds.whoami, ("whoami",)),
    (mcp, ("mcp",)),  # issue 17: sandboxes as MCP tools
    # issue 14
    (logs_cmds.logs, ("logs",)),
    (logs_cmds.resize, ("resize",)),
    (logs_cmds.archived, ("archived",)),
    (pool_cmds.pool, ("pool",)),
]
for _command, _names in VERBS:
    for _verb in _names:
        cli.add_command(_command, _verb)


def main() -> None:
    cli()
