"""The sandbox proxy (data plane): one HTTP endpoint in front of every sandbox.

Each request names its sandbox by ``Host: {id-or-name}.local`` (or ``{port}-…`` for
a user port) or by ``X-Tensorlake-Sandbox-Id`` (``routing.py``); an injected
resolver turns that into an address, and the request is streamed to the sandbox's
agent (port 9501) or user port and the response streamed back (``exchange.py``).

Why hand-written over h11 rather than a framework (aiohttp, uvicorn + httpx, …):

* **Per-request routing on one keep-alive connection.** Clients pool connections to
  ``localhost:9443`` and send requests for different sandboxes down the same one, so
  the upstream is chosen per request from its headers, never per connection. With
  h11 that is one function call between parsing a request and forwarding it; in a
  framework it would be an app that re-implements forwarding with a second HTTP
  client, and the two layers' buffering and timeouts would have to be fought.
* **Zero buffering.** Bodies are relayed event by event (50 MiB+ file transfers in
  constant memory, each SSE event flushed as it arrives), in both directions at
  once so an early answer or a vanished client is seen immediately.
* **Raw splice after an upgrade.** After the agent's 101 the proxy copies bytes
  without understanding them (PTY and TCP-tunnel WebSockets); h11 hands over the
  bytes it read ahead (``trailing_data``). An ASGI app only ever sees decoded
  WebSocket messages, so it would have to re-frame every message both ways.
* h11 is already what the agent speaks, so both ends share one HTTP implementation.

Upstream connections are opened per request (``upstream.py`` says why and gives
the measurement).

Module map: ``server`` (listener, lifecycle), ``client`` (client side, h11 server),
``exchange`` (one proxied request), ``upstream`` (agent side, h11 client),
``splice`` (after 101), ``routing``, ``headers``, ``activity``, ``errors``.
"""

from .activity import ActivityCallback
from .exchange import Resolver
from .routing import AGENT_PORT
from .server import SandboxProxy

__all__ = ["AGENT_PORT", "ActivityCallback", "Resolver", "SandboxProxy"]
