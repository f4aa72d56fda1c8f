"""The envd view's line to one sandbox's agent: found through the service, authenticated.

``locate`` goes through ``SandboxService.resolve`` (the proxy's own path: project
check, auto-resume of a suspended sandbox, the agent's key) with the sandbox's own
project, since the caller proved itself with the sandbox's envd token, not a key.
Every answer is checked for the agent's proof (``manager.agent_client.verify``), like
the host's other agent calls: the tenant owns PID 1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..agent import auth as agent_auth
from ..auth.keys import Principal, Role
from ..errors import NotFound
from . import agent_sse
from .agent_sse import AgentSaid  # noqa: F401 - its home was here; importers keep their path
from .manager_api import SandboxService, agent_client, record
from .records import ENV_KEY

AGENT_PORT = 9501
MAX_BODY = 64 << 20  # a file read through the view (the agent caps writes itself)
_http: httpx.AsyncClient | None = None


def _client() -> httpx.AsyncClient:
    """One client, no kept-alive connections (an address outlives its sandbox: see
    agent_client.py), no read timeout (a followed process may be silent for minutes)."""
    global _http
    if _http is None:
        _http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None),
                                  limits=httpx.Limits(max_keepalive_connections=0))
    return _http


async def close() -> None:
    global _http
    if _http is not None:
        await _http.aclose()
        _http = None


@dataclass(frozen=True)
class Agent:
    sandbox_id: str
    ip: str
    port: int
    key: bytes | None
    env: dict[str, str] = field(default_factory=dict)  # E2B envVars given at create (e2b/records.py)

    def _url(self, path: str) -> str:
        return f"http://{self.ip}:{self.port}{path}"

    async def call(self, method: str, path: str, *, json_body: Any = None, content: bytes | None = None,
                   params: dict[str, str] | None = None) -> bytes:
        """The body of a 2xx answer; ``AgentSaid`` for the agent's errors."""
        async with self.stream(method, path, json_body=json_body, content=content, params=params) as resp:
            body = bytearray()
            async for chunk in resp.aiter_raw():
                body += chunk
                if len(body) > MAX_BODY:
                    raise agent_client.AgentError(f"answer over {MAX_BODY} bytes", code="AGENT_RESPONSE_TOO_LARGE")
            return bytes(body)

    def stream(self, method: str, path: str, *, json_body: Any = None, content: Any = None,
               params: dict[str, str] | None = None) -> "_Stream":
        return _Stream(self, method, path, json_body, content, params)

    async def json(self, method: str, path: str, json_body: Any = None) -> Any:
        body = await self.call(method, path, json_body=json_body)
        return agent_client.parse_json(body) if body else None

    async def events(self, method: str, path: str, json_body: Any = None) -> AsyncIterator[dict[str, Any]]:
        """The JSON ``data:`` lines of an SSE answer (bare h11: ``agent_sse.py``)."""
        async for event in agent_sse.events(self, method, path, json_body):
            yield event


class _Stream:
    """``async with agent.stream(...) as resp``: head checked (proof, status) on entry."""

    def __init__(self, agent: Agent, method: str, path: str, json_body: Any, content: Any,
                 params: dict[str, str] | None) -> None:
        self.agent, self.method, self.path = agent, method, path
        self.kwargs: dict[str, Any] = {"params": params}
        if json_body is not None:
            self.kwargs["json"] = json_body
        elif content is not None:
            self.kwargs["content"] = content
        self._cm: Any = None

    async def __aenter__(self) -> httpx.Response:
        nonce = agent_client.new_nonce()
        self._cm = _client().stream(self.method, self.agent._url(self.path),
                                    headers={agent_auth.NONCE_HEADER: nonce}, **self.kwargs)
        try:
            resp = await self._cm.__aenter__()
        except httpx.HTTPError as exc:
            raise agent_client.AgentError(f"could not talk to the sandbox's agent: {exc}",
                                          code="AGENT_UNREACHABLE") from None
        if not agent_client.verify(self.agent.key, nonce, resp.headers):
            await self._cm.__aexit__(None, None, None)
            raise agent_client.AgentError("the sandbox's agent failed authentication", code="AGENT_NOT_AUTHENTIC")
        if resp.status_code >= 400:
            raw = await resp.aread()
            await self._cm.__aexit__(None, None, None)
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = {}
            doc = doc if isinstance(doc, dict) else {}
            raise AgentSaid(resp.status_code, str(doc.get("code", "AGENT_ERROR")),
                            str(doc.get("error") or doc.get("message") or f"agent answered {resp.status_code}"))
        return resp

    async def __aexit__(self, *exc: Any) -> None:
        await self._cm.__aexit__(*exc)


async def locate(service: SandboxService, sandbox_id: str) -> Agent:
    """The agent of a sandbox (resumed first if suspended with auto_resume); NotFound otherwise."""
    rec = record(service, sandbox_id)
    if rec is None:
        raise NotFound(f"sandbox {sandbox_id!r} not found", code="SANDBOX_NOT_FOUND")
    principal = Principal("e2b-envd-token", rec.namespace, Role.MEMBER)
    found = await service.resolve(rec.id, AGENT_PORT, principal)
    ip, port, sid = found[:3]
    key = found[3] if len(found) > 3 else None
    env = rec.extra.get(ENV_KEY) or {}
    return Agent(sid, ip, port, key, dict(env) if isinstance(env, dict) else {})  # type: ignore[arg-type]
