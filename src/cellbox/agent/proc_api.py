"""HTTP handlers for ``/api/v1/processes...`` (spec section 3.1 / 3.2).

Decisions worth knowing:
  * A command that cannot be exec'd (not found, not executable, bad
    ``working_dir``, unknown user) is answered with a 4xx JSON error *before*
    any SSE byte is sent, for both ``POST /processes`` and ``/run``
    (codes ``COMMAND_NOT_FOUND``, ``PERMISSION_DENIED``, ``INVALID_WORKING_DIR``,
    ``INVALID_USER``, ``SPAWN_FAILED``).
  * ``/run`` events: ``{"handle","pid","started_at"}``, then
    ``{"line","timestamp","stream"}`` per line, then exactly one final event:
    ``{"exit_code": N, "reason": "exited"}``, ``{"signal": S, "reason":
    "signaled"}``, ``{"exit_code": -9, "signal": 9, "reason": "timed_out"}`` or
    ``{"signal": 9, "oom_killed": true, "reason": "oom_killed"}``.  Events carry
    no ``event:`` name (the SDK parses them by shape).
  * If the ``/run`` client disconnects before the process ends, its process
    group is SIGKILLed (nobody can ever collect the result).
  * ``.../follow`` replays the retained lines, streams live ones, then sends
    ``event: eof`` and ends the response once the process is finished.
  * ``DELETE`` SIGKILLs the group but keeps the record (status/output stay
    readable) until it ages out of the retention window.
  * Any of ``name``/``restart``/``health_check`` makes the process supervised
    (``managed.py``, imported on first use): restarts with backoff, health
    checks, ``POST .../restart`` (400 ``NOT_MANAGED`` otherwise), DELETE =
    SIGTERM then SIGKILL after ``stop_grace_ms`` (start-request field, or
    ``?stop_grace_ms=`` / JSON body on the DELETE).  A live name is unique:
    409 ``NAME_TAKEN``.  ``{p}`` naming any incarnation resolves to the
    current one.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from . import sse
from .errors import APIError, bad_request
from .output import BOTH, STDERR, STDOUT
from .processes import Process, ProcessManager, stdin_error
from .spawn import SpawnSpec
from .routes import Router
from .server import Request, Response, StreamingResponse, empty_response, json_response
from .users import resolve_user
from .validate import (
    opt_choice,
    opt_number,
    opt_str,
    opt_str_list,
    opt_str_map,
    req_int,
    req_str,
    require_object,
)

_STREAMS: dict[str, frozenset[str]] = {
    "stdout": frozenset((STDOUT,)),
    "stderr": frozenset((STDERR,)),
    "output": BOTH,
}
_REPLAY_BATCH = 256  # lines per socket write when replaying a backlog


def _opt_count(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise APIError(400, "INVALID_REQUEST", f"query parameter {name!r} must be a non-negative integer")
    return int(raw)


def _newest(lines: list[str], tail: int | None, max_bytes: int | None) -> tuple[list[str], bool]:
    """The newest lines within ``tail`` lines and ``max_bytes`` characters; and whether any were left out."""
    if tail is not None and len(lines) > tail:
        lines = lines[len(lines) - tail:] if tail else []
        cut = True
    else:
        cut = False
    if max_bytes is not None:
        total, start = 0, len(lines)
        while start > 0 and total + len(lines[start - 1]) + 1 <= max_bytes:
            start -= 1
            total += len(lines[start]) + 1
        cut = cut or start > 0
        lines = lines[start:]
    return lines, cut


def parse_spawn(body: Any, *, run: bool) -> SpawnSpec:
    """Validate a start (``run=False``) or run request body."""
    obj = require_object(body)
    command = req_str(obj, "command")
    args = opt_str_list(obj, "args")
    env = opt_str_map(obj, "env")
    working_dir = opt_str(obj, "working_dir")
    if working_dir is not None and not working_dir.startswith("/"):
        raise bad_request("field 'working_dir' must be an absolute path")
    timeout = opt_number(obj, "timeout") or None  # 0 = no timeout
    identity = resolve_user(obj.get("user"))
    if run:
        # stdin_mode "pipe" on a run: the host's E2B view (cellbox/e2b/) starts and follows
        # a command in one request; Tensorlake clients never send it (default closed).
        stdin_pipe = opt_choice(obj, "stdin_mode", ("closed", "pipe"), "closed") == "pipe"
        return SpawnSpec(command, args, env, working_dir or None, identity, stdin_pipe=stdin_pipe, timeout=timeout)
    stdin_mode = opt_choice(obj, "stdin_mode", ("closed", "pipe"), "closed")
    stdout_mode = opt_choice(obj, "stdout_mode", ("capture", "discard"), "capture")
    stderr_mode = opt_choice(obj, "stderr_mode", ("capture", "discard"), "capture")
    name = opt_str(obj, "name")
    if name is not None and (not name or "/" in name or name.isdigit()):
        raise bad_request("field 'name' must be non-empty, without '/', and not all digits")
    return SpawnSpec(
        command,
        args,
        env,
        working_dir or None,
        identity,
        stdin_pipe=stdin_mode == "pipe",
        capture_stdout=stdout_mode == "capture",
        capture_stderr=stderr_mode == "capture",
        name=name,
        timeout=timeout,
    )


class ProcessAPI:
    def __init__(self, manager: ProcessManager, keepalive: float = sse.KEEPALIVE_SECONDS) -> None:
        self.pm = manager
        self.keepalive = keepalive
        self._supervisor: Any = None  # managed.Supervisor, built on first use

    def supervisor(self) -> Any:
        if self._supervisor is None:
            from .managed import Supervisor

            self._supervisor = Supervisor(self.pm)
        return self._supervisor

    def shutdown(self) -> None:
        """Agent stopping: no more restarts/probes of managed processes."""
        if self._supervisor is not None:
            self._supervisor.shutdown()

    def register(self, router: Router) -> None:
        base = "/api/v1/processes"
        router.add("POST", f"{base}/run", self.run)
        router.add("POST", base, self.start)
        router.add("GET", base, self.list)
        router.add("GET", f"{base}/{{p}}", self.get)
        router.add("DELETE", f"{base}/{{p}}", self.delete)
        router.add("POST", f"{base}/{{p}}/signal", self.signal)
        router.add("POST", f"{base}/{{p}}/restart", self.restart)
        router.add("POST", f"{base}/{{p}}/stdin", self.stdin)
        router.add("POST", f"{base}/{{p}}/stdin/close", self.stdin_close)
        for kind in _STREAMS:
            router.add("GET", f"{base}/{{p}}/{kind}", self._output_handler(kind))
            router.add("GET", f"{base}/{{p}}/{kind}/follow", self._follow_handler(kind))

    def _lookup(self, request: Request) -> Process:
        ref = request.params["p"]
        proc = self.pm.find(ref)
        if proc is None:
            raise APIError(404, "PROCESS_NOT_FOUND", f"process {ref} not found")
        if proc.managed is not None and proc.managed.current is not None:
            return proc.managed.current  # {p} named an older incarnation
        return proc

    # -------------------------------------------------------------- start
    async def start(self, request: Request) -> Response:
        body = await request.json()
        spec = parse_spawn(body, run=False)
        if any(body.get(k) is not None for k in ("name", "restart", "health_check")):
            proc = self.supervisor().start(spec, body)
        else:
            proc = self.pm.spawn(spec)
        return json_response(proc.info(), 201)

    async def run(self, request: Request) -> StreamingResponse:
        body = await request.json()
        spec = parse_spawn(body, run=True)
        # "detach": true (the host's E2B view): the process outlives its stream, as an
        # E2B command does; by default a run ends with the client that asked for it.
        detach = isinstance(body, dict) and body.get("detach") is True
        proc = self.pm.spawn(spec)

        def abandon() -> None:
            if not proc.exited and not detach:
                self.pm.kill(proc)

        return StreamingResponse(200, self._run_events(proc), list(sse.HEADERS), on_close=abandon)

    async def _run_events(self, proc: Process) -> AsyncIterator[bytes]:
        yield sse.event({"handle": proc.handle, "pid": proc.pid, "started_at": proc.started_at})
        async for chunk in self._lines(proc, BOTH, with_stream=True, name=None):
            yield chunk
        yield sse.event(proc.exit_event())

    async def _lines(
        self, proc: Process, streams: frozenset[str], *, with_stream: bool, name: str | None
    ) -> AsyncIterator[bytes]:
        """Replay then live-follow ``proc``'s lines until it is finished."""
        seq = 0
        log = proc.log
        while True:
            done = log.finished  # sampled first: lines up to this point are all read below
            entries, seq = log.since(seq)
            batch: list[bytes] = []
            for entry in entries:
                if entry.stream not in streams:
                    continue
                data: dict[str, Any] = {"line": entry.line, "timestamp": entry.timestamp}
                if with_stream:
                    data["stream"] = entry.stream
                batch.append(sse.event(data, name))
                if len(batch) >= _REPLAY_BATCH:
                    yield b"".join(batch)
                    batch = []
            if batch:
                yield b"".join(batch)
            if done:
                return
            if not await log.wait(seq, self.keepalive):
                yield sse.PING

    # -------------------------------------------------------------- query
    async def list(self, request: Request) -> Response:
        return json_response({"processes": [p.info() for p in self.pm.all()]})

    async def get(self, request: Request) -> Response:
        return json_response(self._lookup(request).info())

    def _output_handler(self, kind: str):  # type: ignore[no-untyped-def]
        streams = _STREAMS[kind]

        async def handler(request: Request) -> Response:
            proc = self._lookup(request)
            # ``tail``/``max_bytes`` (ours, additive): only the newest lines, so the host's
            # logs route never has to take a whole process's output in one answer.
            tail = _opt_count(request.query("tail"), "tail")
            max_bytes = _opt_count(request.query("max_bytes"), "max_bytes")
            entries = [e for e in proc.log.since(0)[0] if e.stream in streams]
            lines = [e.line for e in entries]
            cut = False
            if tail is not None or max_bytes is not None:
                lines, cut = _newest(lines, tail, max_bytes)
            body: dict[str, Any] = {"pid": proc.pid, "lines": lines, "line_count": len(lines)}
            if request.query("streams") == "1":  # ours, additive: the host's log levels (stderr)
                body["streams"] = [e.stream for e in entries[len(entries) - len(lines):]]
            if proc.log.truncated or cut:  # older lines were dropped (budget) or left out
                body.update(truncated=True, dropped_lines=proc.log.dropped)  # extra keys: clients ignore them
            return json_response(body)

        return handler

    def _follow_handler(self, kind: str):  # type: ignore[no-untyped-def]
        streams = _STREAMS[kind]
        with_stream = kind == "output"

        async def handler(request: Request) -> StreamingResponse:
            proc = self._lookup(request)

            async def events() -> AsyncIterator[bytes]:
                async for chunk in self._lines(proc, streams, with_stream=with_stream, name="output"):
                    yield chunk
                yield sse.event({}, "eof")

            return StreamingResponse(200, events(), list(sse.HEADERS))

        return handler

    # ------------------------------------------------------------ control
    async def delete(self, request: Request) -> Response:
        proc = self._lookup(request)
        if proc.managed is None:
            self.pm.kill(proc)
            return empty_response(204)
        from .managed import parse_stop_grace

        grace = parse_stop_grace(request.query("stop_grace_ms"))
        raw = await request.body()
        if raw.strip():
            try:
                obj = json.loads(raw)
            except ValueError:
                raise bad_request("malformed JSON body") from None
            if isinstance(obj, dict) and obj.get("stop_grace_ms") is not None:
                grace = parse_stop_grace(obj["stop_grace_ms"])
        proc.managed.stop(grace)
        return empty_response(204)

    async def restart(self, request: Request) -> Response:
        proc = self._lookup(request)
        if proc.managed is None:
            raise bad_request(f"process {request.params['p']} is not a managed process", "NOT_MANAGED")
        await proc.managed.manual_restart()
        return json_response(proc.managed.current.info())

    async def signal(self, request: Request) -> Response:
        proc = self._lookup(request)
        sig = req_int(require_object(await request.json()), "signal")
        if not 1 <= sig <= 64:
            raise bad_request(f"invalid signal number {sig}")
        return json_response({"success": self.pm.send_signal(proc, sig)})

    async def stdin(self, request: Request) -> Response:
        proc = self._lookup(request)
        if proc.stdin_fd is None:
            raise stdin_error(proc)
        async for chunk in request.stream():
            await self.pm.write_stdin(proc, chunk)
        return empty_response(204)

    async def stdin_close(self, request: Request) -> Response:
        self.pm.close_stdin(self._lookup(request))
        return empty_response(204)
