"""Entry point of the ``cellbox`` command."""

from __future__ import annotations

import click

from .setup_cmd import setup


@click.group()
@click.version_option(package_name="cellbox")
def cli() -> None:
    """cellbox: self-hosted sandboxes for AI agents."""


cli.add_command(setup)


def main() -> None:
    cli()
