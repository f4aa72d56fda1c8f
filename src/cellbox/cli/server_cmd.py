"""``cellbox server``: the lifecycle API and the sandbox proxy in one process."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="CELLBOX_HOST",
              help="address both listeners bind to")
@click.option("--api-port", default=8900, show_default=True, type=click.IntRange(0, 65535),
              envvar="CELLBOX_API_PORT", help="lifecycle API port (0: pick a free one)")
@click.option("--proxy-port", default=9443, show_default=True, type=click.IntRange(0, 65535),
              envvar="CELLBOX_PROXY_PORT", help="sandbox proxy port (0: pick a free one)")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="log every request")
def server(host: str, api_port: int, proxy_port: int, log_level: str, access_log: bool) -> None:
    """Serve the Tensorlake-compatible lifecycle API and the sandbox proxy.

    Sandboxes keep running when the server stops; the next start re-adopts them.
    """
    from ..server import ServerOptions, run

    run(ServerOptions(host=host, api_port=api_port, proxy_port=proxy_port, log_level=log_level,
                      access_log=access_log))
