"""Entry point of the ``cellbox`` command."""

from __future__ import annotations

import click

from . import door_cmds
from .image_cmds import image
from .sandbox_cmds import register as register_sandbox_commands
from .server_cmd import server
from .setup_cmd import setup
from .volume_cmds import fs


@click.group()
@click.version_option(package_name="cellbox")
def cli() -> None:
    """cellbox: self-hosted sandboxes for AI agents."""


cli.add_command(setup)
cli.add_command(server)
cli.add_command(image)
cli.add_command(fs)
register_sandbox_commands(cli)
for command in (door_cmds.key, door_cmds.secret, door_cmds.quota, door_cmds.audit, door_cmds.login,
                door_cmds.whoami):
    cli.add_command(command)


def main() -> None:
    cli()
