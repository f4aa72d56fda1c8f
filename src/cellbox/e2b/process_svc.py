"""envd's ``process.Process`` service, translated onto the agent's process API.

E2B call            agent call
Start               POST /api/v1/processes/run with ``detach`` (one SSE stream: start,
                    output, exit; the process outlives the stream, as envd's do)
Connect             GET …/{pid}/output/follow (replays captured output, then live)
List                GET /api/v1/processes (running ones)
SendInput/StreamInput  POST …/{pid}/stdin
CloseStdin          POST …/{pid}/stdin/close
SendSignal          POST …/{pid}/signal
Start with ``pty``, Update (resize): ``pty_bridge.py``

Output: the agent keeps output as lines, so each line comes back as one data event
with its ``\\n`` (a last line without one gains it). Exit: after the follow stream's
end, the process's own record gives the exit code or signal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from protobuf import Oneof

from .context import Env, guarded, user_of
from .gen.process import process_pb as pb
from .link import Agent

_SIGNALS = {pb.Signal.SIGKILL: 9, pb.Signal.SIGTERM: 15}
_BASE = "/api/v1/processes"


def _pid(selector: pb.ProcessSelector | None) -> int:
    match selector.selector if selector is not None else None:
        case Oneof(field="pid", value=pid) if pid > 0:
            return int(pid)
        case Oneof(field="tag", value=tag):
            raise ConnectError(Code.INVALID_ARGUMENT, f"process tags are not supported (got tag {tag!r}): use the pid")
    raise ConnectError(Code.INVALID_ARGUMENT, "process: a pid is required")


def _event(**kw: Any) -> pb.ProcessEvent:
    (name, value), = kw.items()
    return pb.ProcessEvent(event=Oneof(name, value))


def _end(info: dict[str, Any]) -> pb.ProcessEvent:
    code = info.get("exit_code")
    sig = info.get("signal")
    if code is None and sig is not None:
        status, exit_code = f"signal: {_signame(int(sig))}", -1
    else:
        exit_code = int(code or 0)
        status = f"exit status {exit_code}"
    return _event(end=pb.ProcessEvent.EndEvent(exit_code=exit_code, exited=code is not None, status=status))


def _signame(sig: int) -> str:
    return {9: "killed", 15: "terminated", 2: "interrupt", 1: "hangup"}.get(sig, f"signal {sig}")


async def follow(agent: Agent, pid: int) -> AsyncIterator[pb.ProcessEvent]:
    """Data events until the process's output ends, then its end event."""
    async for ev in agent.events("GET", f"{_BASE}/{pid}/output/follow"):
        line = ev.get("line")
        if not isinstance(line, str):
            continue  # eof, keep-alives
        chunk = (line + "\n").encode()
        out = Oneof("stderr", chunk) if ev.get("stream") == "stderr" else Oneof("stdout", chunk)
        yield _event(data=pb.ProcessEvent.DataEvent(output=out))
    info = await agent.json("GET", f"{_BASE}/{pid}")
    yield _end(info if isinstance(info, dict) else {})


async def run(agent: Agent, body: dict[str, Any]) -> AsyncIterator[pb.ProcessEvent]:
    """Start and follow in one agent request (``/processes/run`` with ``detach``): the
    start event, data events, and the end event from the run's own exit event."""
    started = False
    async for ev in agent.events("POST", f"{_BASE}/run", body):
        if not started:
            if "pid" not in ev:
                continue
            started = True
            yield _event(start=pb.ProcessEvent.StartEvent(pid=int(ev["pid"])))
        elif isinstance(ev.get("line"), str):
            chunk = (ev["line"] + "\n").encode()
            out = Oneof("stderr", chunk) if ev.get("stream") == "stderr" else Oneof("stdout", chunk)
            yield _event(data=pb.ProcessEvent.DataEvent(output=out))
        elif "exit_code" in ev or "signal" in ev:
            yield _end(ev)
            return


class ProcessService:
    def __init__(self, env: Env) -> None:
        self.env = env

    async def list(self, request: pb.ListRequest, ctx: Any) -> pb.ListResponse:
        agent = await self.env.agent(ctx.request_headers)
        doc = await guarded(lambda: agent.json("GET", _BASE))
        procs = []
        for p in (doc or {}).get("processes", []):
            if p.get("status") != "running":
                continue
            config = pb.ProcessConfig(cmd=str(p.get("command", "")), args=[str(a) for a in p.get("args") or []])
            procs.append(pb.ProcessInfo(config=config, pid=int(p["pid"])))
        return pb.ListResponse(processes=procs)

    async def start(self, request: pb.StartRequest, ctx: Any) -> AsyncIterator[pb.StartResponse]:
        agent = await self.env.agent(ctx.request_headers)
        cfg = request.process
        if cfg is None or not cfg.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd is required")
        if request.has_field("pty"):
            from .pty_bridge import start_pty  # only PTY sessions need it

            async for event in start_pty(self.env, agent, request, user_of(ctx.request_headers)):
                yield pb.StartResponse(event=event)
            return
        body: dict[str, Any] = {"command": cfg.cmd, "args": list(cfg.args), "env": {**agent.env, **cfg.envs}}
        if cfg.has_field("cwd") and cfg.cwd:
            body["working_dir"] = cfg.cwd
        if request.has_field("stdin") and request.stdin:
            body["stdin_mode"] = "pipe"
        if user := user_of(ctx.request_headers):  # the agent refuses an unknown user (400)
            body["user"] = user
        body["detach"] = True  # the process outlives this stream, as envd's do
        async for event in _guarded_iter(run(agent, body)):
            yield pb.StartResponse(event=event)

    async def connect(self, request: pb.ConnectRequest, ctx: Any) -> AsyncIterator[pb.ConnectResponse]:
        agent = await self.env.agent(ctx.request_headers)
        pid = _pid(request.process)
        from .pty_bridge import is_pty

        if is_pty(self.env, agent, pid):
            raise ConnectError(Code.UNIMPLEMENTED, f"pid {pid} is a PTY: attaching a second client to a running "
                                                   "PTY is not supported by cellbox (keep the handle pty.create gave)")
        info = await guarded(lambda: agent.json("GET", f"{_BASE}/{pid}"))
        if (info or {}).get("status") != "running":
            raise ConnectError(Code.NOT_FOUND, f"process with pid {pid} not found (not running)")
        yield pb.ConnectResponse(event=_event(start=pb.ProcessEvent.StartEvent(pid=pid)))
        async for event in _guarded_iter(follow(agent, pid)):
            yield pb.ConnectResponse(event=event)

    async def update(self, request: pb.UpdateRequest, ctx: Any) -> pb.UpdateResponse:
        from .pty_bridge import resize  # only PTY sessions need it

        await resize(self.env, await self.env.agent(ctx.request_headers), _pid(request.process), request)
        return pb.UpdateResponse()

    async def stream_input(self, request: AsyncIterator[pb.StreamInputRequest], ctx: Any) -> pb.StreamInputResponse:
        agent = await self.env.agent(ctx.request_headers)
        pid = 0
        async for msg in request:
            match msg.event:
                case Oneof(field="start", value=start):
                    pid = _pid(start.process)
                case Oneof(field="data", value=data) if data.input is not None:
                    if not pid:
                        raise ConnectError(Code.INVALID_ARGUMENT, "stream input: a start event must come first")
                    await self._input(agent, pid, data.input)
        return pb.StreamInputResponse()

    async def send_input(self, request: pb.SendInputRequest, ctx: Any) -> pb.SendInputResponse:
        agent = await self.env.agent(ctx.request_headers)
        if request.input is None:
            raise ConnectError(Code.INVALID_ARGUMENT, "input is required")
        await self._input(agent, _pid(request.process), request.input)
        return pb.SendInputResponse()

    async def _input(self, agent: Agent, pid: int, given: pb.ProcessInput) -> None:
        match given.input:
            case Oneof(field="stdin", value=data):
                await guarded(lambda: agent.call("POST", f"{_BASE}/{pid}/stdin", content=bytes(data)))
            case Oneof(field="pty", value=data):
                from .pty_bridge import send

                await send(self.env, agent, pid, bytes(data))
            case _:
                raise ConnectError(Code.INVALID_ARGUMENT, "input: stdin or pty bytes are required")

    async def send_signal(self, request: pb.SendSignalRequest, ctx: Any) -> pb.SendSignalResponse:
        agent = await self.env.agent(ctx.request_headers)
        pid = _pid(request.process)
        sig = _SIGNALS.get(request.signal)
        if sig is None:
            raise ConnectError(Code.INVALID_ARGUMENT, f"signal: SIGKILL or SIGTERM, not {request.signal!r}")
        from .pty_bridge import kill_pty

        if await kill_pty(self.env, agent, pid):
            return pb.SendSignalResponse()
        info = await guarded(lambda: agent.json("GET", f"{_BASE}/{pid}"))
        if (info or {}).get("status") != "running":  # E2B: signalling a finished process is NOT_FOUND
            raise ConnectError(Code.NOT_FOUND, f"process with pid {pid} not found (not running)")
        done = await guarded(lambda: agent.json("POST", f"{_BASE}/{pid}/signal", {"signal": sig}))
        if isinstance(done, dict) and done.get("success") is False:
            raise ConnectError(Code.NOT_FOUND, f"process with pid {pid} not found (not running)")
        return pb.SendSignalResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: Any) -> pb.CloseStdinResponse:
        agent = await self.env.agent(ctx.request_headers)
        pid = _pid(request.process)
        await guarded(lambda: agent.call("POST", f"{_BASE}/{pid}/stdin/close"))
        return pb.CloseStdinResponse()


async def _guarded_iter(events: AsyncIterator[pb.ProcessEvent]) -> AsyncIterator[pb.ProcessEvent]:
    from ..errors import CellboxError
    from .context import connect_error

    try:
        async for event in events:
            yield event
    except CellboxError as exc:
        raise connect_error(exc) from None
