"""An interactive terminal session in a sandbox (spec §3.3)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from .._errors import WaitTimeout
from .._shared import PTY_DATA, PTY_EXIT, exit_code_from_close_reason, pty_decode, pty_input, pty_ready, pty_resize
from .websocket import AsyncWebSocket

if TYPE_CHECKING:
    from .sandbox import AsyncSandbox


class AsyncPty:
    """A command on a pseudo-terminal: ``send`` keystrokes, ``recv`` screen output, ``resize``,
    and ``wait`` for its exit code. ``recv`` returns b"" once the session has ended."""

    def __init__(self, sandbox: AsyncSandbox, session_id: str, token: str, ws: AsyncWebSocket) -> None:
        self.sandbox = sandbox
        self.session_id = session_id
        self.token = token
        self._ws = ws
        self.exit_code: int | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} session={self.session_id} sandbox={self.sandbox.id}>"

    @classmethod
    async def attach(cls, sandbox: AsyncSandbox, session_id: str, token: str) -> AsyncPty:
        """Connect to an existing session's WebSocket and tell the agent we are ready."""
        ws = await AsyncWebSocket.connect(
            sandbox._proxy(), f"/api/v1/pty/{session_id}/ws?token={quote(token, safe='')}", {"X-PTY-Token": token}
        )
        pty = cls(sandbox, session_id, token, ws)
        await ws.send(pty_ready())
        return pty

    async def __aenter__(self) -> AsyncPty:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, data: bytes | str) -> None:
        """Type ``data`` into the terminal."""
        await self._ws.send(pty_input(data.encode() if isinstance(data, str) else bytes(data)))

    async def resize(self, rows: int, cols: int) -> None:
        """Change the terminal size (the program gets SIGWINCH)."""
        await self._ws.send(pty_resize(rows, cols))

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next chunk of terminal output; b"" once the session has ended.

        With ``timeout``, :class:`WaitTimeout` if no output arrives for that long.
        """
        while True:
            frame = await self._ws.recv(timeout)
            if frame is None:
                if self.exit_code is None:
                    self.exit_code = exit_code_from_close_reason(self._ws.close_reason)
                return b""
            op, payload = pty_decode(frame)
            if op == PTY_EXIT and isinstance(payload, int):
                self.exit_code = payload
            elif op == PTY_DATA and isinstance(payload, bytes) and payload:
                return payload

    async def wait(self, timeout: float | None = None) -> int | None:
        """Read (and discard) output until the session ends; return the exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"PTY session {self.session_id} still running after {timeout:g}s")
            try:
                if not await self.recv(remaining):
                    return self.exit_code
            except WaitTimeout:
                raise WaitTimeout(f"PTY session {self.session_id} still running after {timeout:g}s") from None

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def kill(self) -> None:
        """End the session (the agent kills its process group)."""
        await self.sandbox._agent("DELETE", f"/api/v1/pty/{self.session_id}")

    async def close(self) -> None:
        """Detach; the session keeps running until its command exits or it is killed."""
        await self._ws.close()
