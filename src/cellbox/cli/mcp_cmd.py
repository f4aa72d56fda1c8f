"""``cellbox mcp``: serve the sandbox tools to an MCP client (see docs/mcp.md)."""

from __future__ import annotations

import click


@click.command("mcp")
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              help="stdio: one client that started us; http: streamable HTTP, a key per request")
@click.option("--api-url", envvar="CELLBOX_API_URL", default=None, metavar="URL",
              help="the cellbox server [env CELLBOX_API_URL; default http://localhost:8900]")
@click.option("--api-key", default=None, metavar="KEY",
              help="stdio only: the key to act with [else the CLI's lookup: $CELLBOX_API_KEY, …, admin.key]")
@click.option("--host", default="127.0.0.1", show_default=True, help="http: address to bind")
@click.option("--port", default=8901, show_default=True, type=click.IntRange(0, 65535), help="http: port")
@click.option("--path", default="/mcp", show_default=True, help="http: the endpoint's path")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None, help="http: certificate (PEM)")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None, help="http: its key (PEM)")
@click.option("--insecure", is_flag=True, help="http: allow a non-loopback address without TLS")
def mcp(transport: str, api_url: str | None, api_key: str | None, host: str, port: int, path: str,
        tls_cert: str | None, tls_key: str | None, insecure: bool) -> None:
    """Serve cellbox sandboxes as MCP tools (create, run, files, processes, snapshots, clones).

    Over http each request must carry 'Authorization: Bearer KEY' (a cellbox key); the
    tools then act in that key's project.
    """
    from ..errors import CellboxError
    from ..mcp import server as mcp_server

    if transport == "stdio":
        mcp_server.run_stdio(api_url, api_key)
        return
    if api_key:
        raise click.UsageError("--api-key is for stdio: over http every request brings its own key")
    try:
        mcp_server.run_http(api_url, mcp_server.HttpOptions(host, port, path, tls_cert, tls_key, insecure))
    except CellboxError as exc:
        raise click.UsageError(exc.message) from exc
