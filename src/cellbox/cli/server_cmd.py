"""``cellbox server``: the lifecycle API and the sandbox proxy in one process."""

from __future__ import annotations

from pathlib import Path

import click


def _listen(value: str | None, default_port: int) -> tuple[str | None, int | None]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (host unchanged)."""
    if not value:
        return None, None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT")
    return (host.strip("[]") or None), int(port)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="CELLBOX_HOST",
              help="address both listeners bind to")
@click.option("--api-port", default=8900, show_default=True, type=click.IntRange(0, 65535),
              envvar="CELLBOX_API_PORT", help="lifecycle API port (0: pick a free one)")
@click.option("--proxy-port", default=9443, show_default=True, type=click.IntRange(0, 65535),
              envvar="CELLBOX_PROXY_PORT", help="sandbox proxy port (0: pick a free one)")
@click.option("--api-listen", envvar="CELLBOX_API_LISTEN", default=None, metavar="HOST:PORT",
              help="the API's address (overrides --host/--api-port)")
@click.option("--proxy-listen", envvar="CELLBOX_PROXY_LISTEN", default=None, metavar="HOST:PORT",
              help="the proxy's address (overrides --host/--proxy-port)")
@click.option("--tls-cert", envvar="CELLBOX_TLS_CERT", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="certificate chain (PEM) for both listeners")
@click.option("--tls-key", envvar="CELLBOX_TLS_KEY", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="its private key (PEM)")
@click.option("--tls", "use_setup_tls", is_flag=True,
              help="use the certificate cellbox setup --tls-self-signed made")
@click.option("--insecure", is_flag=True, help="allow a non-loopback address without TLS")
@click.option("--public-proxy-url", envvar="CELLBOX_PUBLIC_PROXY_URL", default=None, metavar="URL",
              help="the proxy's URL as clients on other machines reach it (sandbox_url)")
@click.option("--proxy-domain", envvar="CELLBOX_PROXY_DOMAIN", default=None, metavar="DOMAIN",
              help="route Host: {port}-{id}.DOMAIN like {port}-{id}.local")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="log every request")
@click.option("--cluster", envvar="CELLBOX_CLUSTER", default=None, metavar="POSTGRESQL_URL",
              help="be a control-plane replica of the cluster on this PostgreSQL (docs/cluster.md)")
def server(host: str, api_port: int, proxy_port: int, api_listen: str | None, proxy_listen: str | None,
           tls_cert: Path | None, tls_key: Path | None, use_setup_tls: bool, insecure: bool,
           public_proxy_url: str | None, proxy_domain: str | None, log_level: str, access_log: bool,
           cluster: str | None) -> None:
    """Serve the Tensorlake-compatible lifecycle API and the sandbox proxy.

    Sandboxes keep running when the server stops; the next start re-adopts them.
    Every request needs an API key but ``/health``; a non-loopback address needs TLS.
    """
    from ..auth.tls import tls_dir
    from ..config import load
    from ..server import ServerOptions, run

    api_host, api_listen_port = _listen(api_listen, api_port)
    proxy_host, proxy_listen_port = _listen(proxy_listen, proxy_port)
    if use_setup_tls:
        directory = tls_dir(load())
        tls_cert, tls_key = directory / "server.pem", directory / "server.key"
        if not tls_cert.exists():
            raise click.UsageError(f"{tls_cert} does not exist: run cellbox setup --tls-self-signed first")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    opts = ServerOptions(host=api_host or host, api_port=api_listen_port if api_listen_port is not None else api_port,
                         proxy_port=proxy_listen_port if proxy_listen_port is not None else proxy_port,
                         proxy_host=proxy_host, log_level=log_level, access_log=access_log, tls_cert=tls_cert,
                         tls_key=tls_key, insecure=insecure, public_proxy_url=public_proxy_url,
                         proxy_domain=proxy_domain)
    if cluster:  # cluster: the stateless control plane (cluster/server_main.py)
        from ..cluster.server_main import run as run_cluster
        run_cluster(cluster, opts)
        return
    run(opts)
