"""The MCP server: the tools on an ``MCPServer``, served over stdio or streamable HTTP.

HTTP is stateless (``stateless_http=True``): each POST is a whole exchange, so there is
no session a second caller could attach to, and any number of MCP servers behind a load
balancer answer alike. Binding beyond loopback needs TLS (``--tls-cert/--tls-key``) or
an explicit ``--insecure``, the same rule as ``cellbox server``: the bearer keys would
otherwise cross the network in clear.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from ..errors import InvalidRequest
from . import exec_tools, file_tools, lifecycle_tools, limits
from .backend import Backend
from .http_gate import BearerGate, introspecting_check

INSTRUCTIONS = f"""Sandboxes are isolated Linux machines (Debian, python3, node, git).
create_sandbox returns an id; pass it to run_command, read_file/write_file/list_files,
start_process/read_process_output, snapshot_sandbox, clone_sandbox, terminate_sandbox.
Terminate what you create. Command output is capped ({limits.OUTPUT_DEFAULT} bytes by
default, max_output_bytes to change); paths are absolute."""


def build(backend: Backend) -> MCPServer:
    """An ``MCPServer`` with every cellbox tool and the files resource."""
    server = MCPServer("cellbox", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING")
    lifecycle_tools.register(server, backend)
    exec_tools.register(server, backend)
    file_tools.register(server, backend)
    return server


def run_stdio(api_url: str | None, api_key: str | None) -> None:
    """Serve one client on stdin/stdout, acting with ``api_key`` (else the CLI's lookup)."""
    build(Backend(api_url, api_key, keys_from_requests=False)).run("stdio")


@dataclass
class HttpOptions:
    host: str = "127.0.0.1"
    port: int = 8901
    path: str = "/mcp"
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False


def check_listen(opts: HttpOptions) -> None:
    """Refuse a non-loopback bind without TLS unless ``insecure``."""
    if (opts.tls_cert is None) != (opts.tls_key is None):
        raise InvalidRequest("--tls-cert and --tls-key go together")
    try:
        loopback = opts.host == "localhost" or ipaddress.ip_address(opts.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and opts.tls_cert is None and not opts.insecure:
        raise InvalidRequest(f"listening on {opts.host} without TLS would send API keys in clear: "
                             "give --tls-cert/--tls-key, or --insecure")


def http_app(api_url: str | None, opts: HttpOptions) -> BearerGate:
    """The ASGI app: bearer gate → the SDK's streamable HTTP app."""
    server = build(Backend(api_url, None, keys_from_requests=True))
    security = None
    if opts.host not in ("127.0.0.1", "localhost", "::1"):
        # The SDK's DNS-rebinding check is for servers on loopback (a browser's page
        # reaching localhost); a network-facing one is protected by the bearer key.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(
        streamable_http_path=opts.path, stateless_http=True, json_response=True, host=opts.host,
        transport_security=security, max_request_body_size=limits.WRITE_MAX * 2,
    )
    return BearerGate(app, introspecting_check(api_url))


def run_http(api_url: str | None, opts: HttpOptions) -> None:
    """Serve streamable HTTP on ``opts.host:opts.port`` until interrupted."""
    import uvicorn

    check_listen(opts)
    uvicorn.run(http_app(api_url, opts), host=opts.host, port=opts.port, log_level="warning",
                ssl_certfile=opts.tls_cert, ssl_keyfile=opts.tls_key)
