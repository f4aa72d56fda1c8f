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
    """A process in a sandbox, by PID. Its output is kept by the agent after it exits."""

    def __init__(self, sandbox: AsyncSandbox, pid: int, info: ProcessInfo | None = None) -> None:
        self.sandbox = sandbox
        self.pid = pid
        self._info = info

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} sandbox={self.sandbox.id}>"

    @property
    def _path(self) -> str:
        return f"/api/v1/processes/{process_ref(self.pid)}"

    async def info(self) -> ProcessInfo:
        """The process's current state (status, exit code, signal)."""
        response = await self.sandbox._agent("GET", self._path)
        self._info = ProcessInfo.from_json(response.json())
        return self._info

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
                raise WaitTimeout(f"process {self.pid} still running after {timeout:g}s")
            await sleep(delay)
            delay = min(delay * 2, poll_interval)


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise InvalidRequest(f"stream must be one of {', '.join(STREAMS)}")
