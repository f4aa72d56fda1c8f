"""The ``/metrics`` endpoint: authenticated like the API (a Bearer key), admins only.

Admins only because the series span every project (names of projects, their use);
a scraper gets a key of its own (``cellbox key create --role admin --name prometheus``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from ..errors import CellboxError
from .collect import Metrics


class MetricsApp:
    def __init__(self, service: Any, door: Any) -> None:
        self.door = door
        self.metrics = Metrics(service, door)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            principal = self.door.auth.authenticate(header)
            status, body, ctype = 200, b"", CONTENT_TYPE_LATEST
            if not principal.is_admin:
                status, body, ctype = 403, b'{"error": "/metrics needs an admin key", "code": "ADMIN_REQUIRED"}', \
                    "application/json"
            else:
                body = generate_latest(self.metrics.registry)
        except CellboxError as exc:
            status, ctype = exc.status, "application/json"
            body = ('{"error": %s, "code": "%s"}' % (_json(exc.message), exc.code)).encode()
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _json(text: str) -> str:
    import json
    return json.dumps(text)
