"""Entry point of the ``cellbox`` command."""

from __future__ import annotations

import click

from collections.abc import Sequence

from . import door_cmds, file_cmds, logs_cmds, memstate_cmds, pool_cmds, process_cmds, sandbox_cmds, terminal_cmds
from .pty_cmds import pty
from .image_cmds import image
from .mcp_cmd import mcp
from .server_cmd import server
from .cluster_cmds import node
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
    (process_cmds.restart, ("restart",)),  # a managed process (tl sbx restart)
    (file_cmds.cp, ("cp",)),
    (terminal_cmds.ssh, ("ssh",)),
    (terminal_cmds.tunnel, ("tunnel",)),
    (pty, ("pty",)),
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
# The verbs without ``--json`` (tests/cli/test_json_everywhere.py), and why: each runs
# for as long as someone uses it or prints for a person, not a script.
NO_JSON: dict[str, str] = {
    "setup": "prepares this host (root, local): a progress log, no API answer",
    "server": "runs the server in the foreground until stopped",
    "node": "runs a cluster node in the foreground until stopped",
    "ssh": "an interactive terminal",
    "pty attach": "an interactive terminal",
    "tunnel": "forwards a port until interrupted",
    "mcp": "speaks MCP (JSON-RPC) on stdio or HTTP itself",
}
for _command, _names in VERBS:
    for _verb in _names:
        cli.add_command(_command, _verb)


def main() -> None:
    cli()
