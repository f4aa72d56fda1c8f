"""Proxy errors and the one place that turns them into HTTP answers.

The proxy answers on behalf of a sandbox it could not reach, so its error bodies use
the daemon's shape, ``{"error": ..., "code": ...}`` (spec §3), which the SDK shows
verbatim. Codes are the OSS dataplane's (spec §1.4), so clients that already handle
``SANDBOX_NOT_FOUND`` or a 503 retry keep working.

The resolver speaks ``cellbox.errors``; :func:`from_cellbox` keeps its ``code`` and
takes its ``status`` from the class, except for the codes in ``_STATUS_BY_CODE``: the
manager raises ``SandboxNotRunning`` (a ``Conflict``) (409 is right for the control
plane), but to a data-plane client "not running" means "try later", i.e. 503.
"""

from __future__ import annotations

import json

from ..errors import CellboxError

# Codes whose data-plane status differs from the status of the class that carries them.
_STATUS_BY_CODE = {
    "SANDBOX_NOT_RUNNING": 503,
    "PORT_NOT_EXPOSED": 403,
    "SANDBOX_NOT_FOUND": 404,
    # Terminated or failed: it will never answer again. 410, not 503, which the
    # Tensorlake SDK retries (RETRYABLE_STATUS_CODES 429/502/503/504); and not 404, so
    # a client can tell "gone" from a typo. 4xx other than 404 reach the SDK's caller as
    # RemoteAPIError(410, body), which names the sandbox and its state.
    "SANDBOX_TERMINATED": 410,
}


class ProxyError(Exception):
    """A request the proxy answers itself, with ``status`` and a stable ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return json.dumps({"error": self.message, "code": self.code}).encode()


def from_cellbox(err: CellboxError) -> ProxyError:
    """Map a resolver's error to the answer the client gets (see module docstring)."""
    return ProxyError(_STATUS_BY_CODE.get(err.code, err.status), err.code, err.message)


def missing_target() -> ProxyError:
    return ProxyError(
        400,
        "MISSING_SANDBOX_ID",
        "no sandbox given: use Host: <id-or-name>.local or the X-Tensorlake-Sandbox-Id header",
    )


def unreachable(sandbox_id: str, detail: str) -> ProxyError:
    return ProxyError(502, "SANDBOX_UNREACHABLE", f"cannot reach sandbox {sandbox_id}: {detail}")


def bad_upstream(sandbox_id: str, detail: str) -> ProxyError:
    return ProxyError(502, "BAD_GATEWAY", f"sandbox {sandbox_id} sent no valid response: {detail}")


def internal(detail: str) -> ProxyError:
    return ProxyError(500, "INTERNAL", f"internal proxy error: {detail}")
