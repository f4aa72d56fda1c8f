"""PTY sessions through envd, on the agent's PTY API (a WebSocket per session).

E2B                               agent
Start with ``pty``                POST /api/v1/pty, then GET /api/v1/pty/{sid}/ws (WebSocket;
                                  READY frame, output frames relayed as ``pty`` data events,
                                  the exit-code frame as the end event)
SendInput ``pty`` bytes           a 0x00 input frame on that WebSocket
Update (resize)                   POST /api/v1/pty/{sid}/resize
SendSignal on the session's pid   DELETE /api/v1/pty/{sid} (kills it)

The WebSocket client is wsproto over an asyncio connection (no new dependency: the
agent already uses wsproto), with the agent's proof checked on the 101 like every
other answer. Sessions are keyed by (sandbox ID, pid): a pid of another sandbox is
never found.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from protobuf import Oneof
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection, Request,
                            TextMessage)

from ..agent import auth as agent_auth
from .manager_api import agent_client
from .context import Env, guarded
from .gen.process import process_pb as pb
from .link import Agent

_DATA, _RESIZE, _READY, _EXIT = 0, 1, 2, 3  # frame opcodes (agent/ptys.py; 0 is input one way, output the other)
MAX_INPUT = 1 << 20


@dataclass
class Session:
    sid: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ws: WSConnection = field(default_factory=lambda: WSConnection(ConnectionType.CLIENT))

    async def send(self, payload: bytes) -> None:
        self.writer.write(self.ws.send(BytesMessage(data=payload)))
        await self.writer.drain()

    async def frames(self) -> AsyncIterator[bytes]:
        """Binary frames until the agent closes the WebSocket."""
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, BytesMessage):
                    yield bytes(event.data)
                elif isinstance(event, Ping):
                    self.writer.write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    return
                elif isinstance(event, TextMessage):
                    continue

    def close(self) -> None:
        self.writer.close()


def _sessions(env: Env) -> dict[tuple[str, int], Session]:
    return env.state.setdefault("ptys", {})


async def _open(agent: Agent, sid: str, token: str) -> Session:
    reader, writer = await asyncio.open_connection(agent.ip, agent.port)
    session = Session(sid, reader, writer)
    nonce = agent_client.new_nonce()
    writer.write(session.ws.send(Request(host="sandbox", target=f"/api/v1/pty/{sid}/ws?token={token}",
                                         extra_headers=[(agent_auth.NONCE_HEADER.encode(), nonce.encode())])))
    await writer.drain()
    while True:
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            raise agent_client.AgentError("the agent closed the PTY connection", code="AGENT_UNREACHABLE")
        session.ws.receive_data(data)
        for event in session.ws.events():
            if isinstance(event, AcceptConnection):
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.extra_headers}
                if not agent_client.verify(agent.key, nonce, headers):
                    writer.close()
                    raise agent_client.AgentError("the sandbox's agent failed authentication",
                                                  code="AGENT_NOT_AUTHENTIC")
                return session
            if isinstance(event, RejectConnection):
                writer.close()
                raise agent_client.AgentError(f"the agent refused the PTY ({event.status_code})")


async def start_pty(env: Env, agent: Agent, request: pb.StartRequest,
                    user: str | None = None) -> AsyncIterator[pb.ProcessEvent]:
    cfg, size = request.process, request.pty.size if request.pty else None
    body: dict[str, Any] = {"command": cfg.cmd, "args": list(cfg.args), "env": {**agent.env, **cfg.envs},
                            "rows": size.rows if size and size.rows else 24, "cols": size.cols if size and size.cols else 80}
    if cfg.has_field("cwd") and cfg.cwd:
        body["working_dir"] = cfg.cwd
    if user:
        body["user"] = user
    made = await guarded(lambda: agent.json("POST", "/api/v1/pty", body))
    sid, pid = str(made["session_id"]), int(made["pid"])
    key = (agent.sandbox_id, pid)
    try:
        session = await guarded(lambda: _open(agent, sid, str(made["token"])))
    except BaseException:
        await _delete(agent, sid)
        raise
    _sessions(env)[key] = session
    try:
        await session.send(bytes([_READY]))
        yield pb.ProcessEvent(event=Oneof("start", pb.ProcessEvent.StartEvent(pid=pid)))
        async for frame in session.frames():
            if frame[:1] == bytes([_DATA]) and len(frame) > 1:
                out = pb.ProcessEvent.DataEvent(output=Oneof("pty", frame[1:]))
                yield pb.ProcessEvent(event=Oneof("data", out))
            elif frame[:1] == bytes([_EXIT]) and len(frame) >= 5:
                code = struct.unpack(">i", frame[1:5])[0]
                end = pb.ProcessEvent.EndEvent(exit_code=code, exited=code >= 0,
                                               status=f"exit status {code}" if code >= 0 else "signal: killed")
                yield pb.ProcessEvent(event=Oneof("end", end))
                return
        end = pb.ProcessEvent.EndEvent(exit_code=-1, exited=False, status="signal: killed")  # session deleted
        yield pb.ProcessEvent(event=Oneof("end", end))
    finally:
        _sessions(env).pop(key, None)
        session.close()


async def _delete(agent: Agent, sid: str) -> None:
    with contextlib.suppress(Exception):
        await agent.call("DELETE", f"/api/v1/pty/{sid}")


def _session(env: Env, agent: Agent, pid: int) -> Session:
    session = _sessions(env).get((agent.sandbox_id, pid))
    if session is None:
        raise ConnectError(Code.NOT_FOUND, f"no PTY session with pid {pid}")
    return session


async def resize(env: Env, agent: Agent, pid: int, request: pb.UpdateRequest) -> None:
    size = request.pty.size if request.pty else None
    if size is None or not (0 < size.rows <= 65535 and 0 < size.cols <= 65535):
        raise ConnectError(Code.INVALID_ARGUMENT, "pty.size: rows and cols between 1 and 65535 are required")
    session = _session(env, agent, pid)
    rows, cols = size.rows, size.cols
    await guarded(lambda: agent.call("POST", f"/api/v1/pty/{session.sid}/resize", json_body={"rows": rows, "cols": cols}))


async def send(env: Env, agent: Agent, pid: int, data: bytes) -> None:
    if len(data) > MAX_INPUT:
        raise ConnectError(Code.INVALID_ARGUMENT, f"pty input: at most {MAX_INPUT} bytes per call")
    await _session(env, agent, pid).send(bytes([_DATA]) + data)


def is_pty(env: Env, agent: Agent, pid: int) -> bool:
    return (agent.sandbox_id, pid) in _sessions(env)


async def kill_pty(env: Env, agent: Agent, pid: int) -> bool:
    """True if ``pid`` was a PTY session of this view, now killed."""
    session = _sessions(env).get((agent.sandbox_id, pid))
    if session is None:
        return False
    await _delete(agent, session.sid)
    return True
