"""The envd view's hot path to the agent: one SSE request over a bare h11 connection.

``commands.run`` is one ``POST /processes/run`` whose answer is an SSE stream; through
httpx that request cost ~1 ms of the proxy's CPU on top of the proxy's own forwarding
(bench/e2b.py). This is the proxy's own upstream (``proxy/upstream.py``: one fresh
connection, ``Connection: close``, h11) used as a client: the same proof check
(``agent_client.verify``), the same caps on what the tenant's agent may send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import h11

from ..agent import auth as agent_auth
from ..errors import CellboxError
from ..proxy.upstream import Upstream
from .manager_api import agent_client

CONNECT_TIMEOUT = 30.0
MAX_LINE = 1 << 20
MAX_ERROR = 64 << 10


class AgentSaid(CellboxError):
    """The agent answered a 4xx/5xx: its own JSON error, passed on to the E2B client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


class _Head:
    """Response headers as ``verify`` reads them (``.get`` by lower-case name)."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._h = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}

    def get(self, name: str) -> str | None:
        return self._h.get(name.lower())


async def events(agent: Any, method: str, path: str, json_body: Any = None) -> AsyncIterator[dict[str, Any]]:
    """The JSON ``data:`` lines of the agent's SSE answer, as ``Agent.events`` gives them."""
    nonce = agent_client.new_nonce()
    try:
        up = await Upstream.connect(agent.ip, agent.port, CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise agent_client.AgentError(f"could not talk to the sandbox's agent: {exc}", code="AGENT_UNREACHABLE") from None
    done = False
    try:
        body = json.dumps(json_body).encode() if json_body is not None else b""
        head = [(b"host", f"{agent.ip}:{agent.port}".encode()), (agent_auth.NONCE_HEADER.encode(), nonce.encode()),
                (b"connection", b"close"), (b"accept", b"text/event-stream")]
        if json_body is not None:
            head += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        up.send(h11.Request(method=method, target=path, headers=head))
        if body:
            up.send(h11.Data(data=body))
        up.send(h11.EndOfMessage())
        await up.writer.drain()
        resp = await _head(up)
        if not agent_client.verify(agent.key, nonce, _Head(resp.headers)):
            raise agent_client.AgentError("the sandbox's agent failed authentication", code="AGENT_NOT_AUTHENTIC")
        if resp.status_code >= 400:
            doc = _error_doc(await _read_all(up, MAX_ERROR))
            raise AgentSaid(resp.status_code, str(doc.get("code", "AGENT_ERROR")),
                            str(doc.get("error") or doc.get("message") or f"agent answered {resp.status_code}"))
        async for event in _lines(up):
            yield event
        done = True
    except (h11.ProtocolError, ConnectionError, OSError) as exc:
        raise agent_client.AgentError(f"the sandbox's agent broke off its answer: {exc!r}",
                                      code="AGENT_UNREACHABLE") from None
    finally:
        if done:  # the agent closes first (TIME_WAIT stays in the sandbox), off the hot path
            _spawn(up.release())
        else:
            up.close(abort=True)


_pending: set[Any] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _head(up: Upstream) -> h11.Response:
    while True:
        event = await up.next_event()
        if isinstance(event, h11.Response):
            return event
        if not isinstance(event, h11.InformationalResponse):
            raise ConnectionResetError("connection closed before the answer's head")


async def _read_all(up: Upstream, cap: int) -> bytes:
    out = bytearray()
    while len(out) <= cap:
        event = await up.next_event()
        if isinstance(event, h11.Data):
            out += event.data
        else:
            break
    return bytes(out[:cap])


def _error_doc(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


async def _lines(up: Upstream) -> AsyncIterator[dict[str, Any]]:
    pending = bytearray()
    while True:
        event = await up.next_event()
        if isinstance(event, h11.EndOfMessage):
            return
        if not isinstance(event, h11.Data):
            raise ConnectionResetError("connection closed mid-stream")
        pending += event.data
        while (nl := pending.find(b"\n")) >= 0:
            line = bytes(pending[:nl]).rstrip(b"\r")
            del pending[: nl + 1]
            if line.startswith(b"data:"):
                parsed = agent_client.parse_json(line[5:])
                if isinstance(parsed, dict):
                    yield parsed
        if len(pending) > MAX_LINE:
            raise agent_client.AgentError("an event over 1 MiB", code="AGENT_RESPONSE_TOO_LARGE")
