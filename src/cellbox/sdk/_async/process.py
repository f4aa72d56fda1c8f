"""A handle on a process started in a sandbox with ``start_process``."""

from __future__ import annotations

import signal as _signal
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ...errors import InvalidRequest
from .._backend_async import sleep
from .._errors import WaitTimeout
from .._models import ProcessInfo
from .._shared import process_ref

if TYPE_CHECKING:
    from .sandbox import AsyncSandbox

STREAMS = ("output", "stdout", "stderr")


class AsyncProcess:
    """A process in a sandbox, by PID or, for a managed process, by name. Its output is
    kept by the agent after it exits.

    ``ref`` is what requests name (``/processes/{ref}``): a name follows a managed
    process across restarts (each restart is a new PID); ``pid`` is the PID as last
    seen (None for a handle made from a name, until :meth:`info`).
    """

    def __init__(self, sandbox: AsyncSandbox, pid: int | str, info: ProcessInfo | None = None) -> None:
        self.sandbox = sandbox
        self.ref: int | str = pid
        self.pid: int | None = pid if isinstance(pid, int) else (info.pid if info else None)
        self._info = info

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ref={self.ref!r} sandbox={self.sandbox.id}>"

    @property
    def _path(self) -> str:
        return f"/api/v1/processes/{process_ref(self.ref)}"

    def _seen(self, info: ProcessInfo) -> ProcessInfo:
        self._info, self.pid = info, info.pid
        return info

    async def info(self) -> ProcessInfo:
        """The process's current state (status, exit code, signal; ``managed`` for a
        supervised one: restart count, health)."""
        response = await self.sandbox._agent("GET", self._path)
        return self._seen(ProcessInfo.from_json(response.json()))

    async def restart(self) -> ProcessInfo:
        """Restart a managed process now (SIGTERM, then SIGKILL after its grace time, then
        a new incarnation); also revives a stopped one. A process that is not managed is
        refused (``InvalidRequest``, the agent's ``NOT_MANAGED``)."""
        response = await self.sandbox._agent("POST", f"{self._path}/restart")
        return self._seen(ProcessInfo.from_json(response.json()))

    async def output(self, stream: str = "output", *, tail: int | None = None,
                     max_bytes: int | None = None) -> list[str]:
        """The lines captured so far from ``stream`` (``output`` = both, interleaved).

        ``tail`` / ``max_bytes`` keep only the newest lines within that many lines /
        characters, cut by the agent (so a huge log never crosses the wire whole).
        """
        _check_stream(stream)
        params = {k: v for k, v in (("tail", tail), ("max_bytes", max_bytes)) if v is not None}
        response = await self.sandbox._agent("GET", f"{self._path}/{stream}", params=params or None)
        return [str(line) for line in response.json().get("lines", [])]

    async def follow_output(self, stream: str = "output") -> AsyncIterator[str]:
        """Yield lines of ``stream`` (replayed from the start, then live) until the process has exited."""
        _check_stream(stream)
        async for line in self.sandbox._follow(f"{self._path}/{stream}/follow"):
            yield line.line

    async def write_stdin(self, data: bytes | str) -> None:
        """Write to the process's stdin (it must have been started with ``stdin_mode="pipe"``)."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await self.sandbox._agent("POST", f"{self._path}/stdin", content=payload)

    async def close_stdin(self) -> None:
        """Close the process's stdin (it then sees end of file)."""
        await self.sandbox._agent("POST", f"{self._path}/stdin/close")

    async def send_signal(self, sig: int = _signal.SIGTERM) -> None:
        """Send ``sig`` to the process's process group."""
        await self.sandbox._agent("POST", f"{self._path}/signal", json={"signal": int(sig)})

    async def kill(self) -> None:
        """SIGKILL the process group (``DELETE /processes/{pid}``)."""
        await self.sandbox._agent("DELETE", self._path)

    async def wait(self, timeout: float | None = None, poll_interval: float = 0.5) -> int:
        """Wait until the process has ended; return its exit code (``-signal`` if a signal ended it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            info = await self.info()
            if not info.running:
                if info.exit_code is not None:
                    return info.exit_code
                return -(info.signal or 0)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"process {self.ref} still running after {timeout:g}s")
            await sleep(delay)
            delay = min(delay * 2, poll_interval)


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise InvalidRequest(f"stream must be one of {', '.join(STREAMS)}")
