"""The console's calls to a sandbox's agent, with the host's authority.

The browser never reaches the agent (nor the proxy, which takes API keys only): the
console calls it from the server like the proxy does, through the manager's
authenticated ``AgentClient`` (nonce + proof, bounded, timed out), for a sandbox the
session's project owns (``SandboxService.get``: another project's is a 404).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from ..errors import CellboxError, Conflict
from ..manager import agent_client
from ..manager.records import SandboxRecord, Status
from ..manager.service import SandboxService

MAX_FILE = 64 << 20  # one upload or download through the console


def running(svc: SandboxService, ref: str, project: str) -> SandboxRecord:
    rec = svc.get(ref, project)
    if rec.status != Status.RUNNING:
        raise Conflict(f"sandbox {rec.id} is {rec.status.value}: resume it first", code="SANDBOX_NOT_RUNNING")
    return rec


async def call(svc: SandboxService, rec: SandboxRecord, method: str, path: str, *, query: dict[str, str] | None = None,
               json_body: Any = None, content: bytes | None = None, max_bytes: int = agent_client.MAX_JSON,
               timeout: float = 30.0) -> tuple[int, bytes]:
    ip, port = svc.manager.agent_address(rec)
    target = path + (f"?{urlencode(query)}" if query else "")
    return await svc.manager.agent.call(ip, port, agent_client.key_of(rec), method, target, json_body=json_body,
                                        content=content, max_bytes=max_bytes, timeout=timeout)


def check(status: int, body: bytes, what: str) -> None:
    """The agent's error (its status and message) as a CellboxError; the agent's own
    4xx codes (NOT_FOUND, IS_DIRECTORY, PATH_TRAVERSAL) pass through unchanged."""
    if status < 300:
        return
    try:
        doc = json.loads(body)
        message, code = str(doc.get("error") or what), str(doc.get("code") or "AGENT_ERROR")
    except (ValueError, AttributeError):
        message, code = f"{what}: the agent answered {status}", "AGENT_ERROR"
    err = CellboxError(f"{what}: {message}", code=code)
    err.status = status if 400 <= status < 500 else 502
    raise err
