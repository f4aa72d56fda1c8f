"""Server-Sent Events framing (spec section 3.2).

Every event is one ``data:`` line of compact JSON (``json.dumps`` never emits
newlines), optionally preceded by ``event: <name>``; idle streams get a
``: ping`` comment every ``KEEPALIVE_SECONDS`` so proxies and clients with
read timeouts do not drop them (clients ignore comment lines).
"""

from __future__ import annotations

import json
from typing import Any

KEEPALIVE_SECONDS = 15.0
PING = b": ping\n\n"
HEADERS: list[tuple[str, str]] = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),  # tell nginx-style proxies not to buffer
]


def event(data: Any, name: str | None = None) -> bytes:
    """One SSE event carrying ``data`` as JSON."""
    payload = json.dumps(data, separators=(",", ":"))
    if name is None:
        return f"data: {payload}\n\n".encode()
    return f"event: {name}\ndata: {payload}\n\n".encode()
