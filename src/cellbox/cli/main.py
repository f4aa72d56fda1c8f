"""Entry point of the ``cellbox`` command."""

from __future__ import annotations

import click

from . import door_cmds
from .image_cmds import image
from .sandbox_cmds import register as register_sandbox_commands
from .server_cmd import server
from .cluster_cmds import node
from .setup_cmd import setup


@click.group()
@click.version_option(package_name="cellbox")
def cli() -> None:
    """cellbox: self-hosted sandboxes for AI agents."""


cli.add_command(setup)
cli.add_command(server)
cli.add_command(node)  # cluster: one host of a cluster (cli/cluster_cmds.py)
cli.add_command(image)
register_sandbox_commands(cli)
for command in (door_cmds.key, door_cmds.secret, door_cmds.quota, door_cmds.audit, door_cmds.login,
                door_cmds.whoami):
    cli.add_command(command)


def main() -> None:
    cli()
