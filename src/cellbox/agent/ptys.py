"""PTY sessions: a child on a pseudo-terminal, its output, attached WebSocket clients.

Spawning.  ``os.openpty()`` gives a master/slave pair; the child is started
with ``subprocess.Popen`` as a fork/exec primitive (as in ``spawn.py``: clean
4xx for "command not found" etc.), the slave as its stdin/stdout/stderr,
``start_new_session`` (setsid) and a ``preexec_fn`` that makes the slave its
controlling terminal (TIOCSCTTY) -- so job control, ^C and SIGWINCH work.  The
SIGCHLD reaper in ``processes.py`` collects every child; sessions register
theirs with ``ProcessManager.watch_pid`` right after the fork.

Output.  One pump task per session reads the master.  While at least one
client is attached and has sent READY, output goes straight to those clients
(the pump awaits their sockets: a slow client throttles the program, as a real
terminal does).  Otherwise it is appended to ``backlog`` (newest
``BACKLOG_LIMIT`` bytes kept) and replayed to the next client that sends READY,
so a client that reconnects -- e.g. after a sandbox suspend/resume dropped its
TCP connection -- sees what it missed.  Several clients may be attached at once
(all get live output, any may type).

End.  The session is *finished* once the child is reaped and the master hit
EOF/EIO (or ``drain_grace`` after the exit, if a background grandchild keeps
the slave open).  Each READY client then gets ``0x03`` + exit code (i32 BE) and
a close frame 1000 ``exit:<code>``; a client that attaches later gets the
backlog and the same ending.  A child killed by signal N reports 128+N.
DELETE closes clients with 1001 ``session terminated``, SIGHUPs the session's
process group, and SIGKILLs everything in the session ``KILL_GRACE`` s later.

Imported lazily (first PTY request): termios/hmac/wsproto stay off the start-up path.
"""

from __future__ import annotations

import asyncio
import fcntl
import hmac
import os
import signal
import struct
import subprocess
import termios
from typing import TYPE_CHECKING, Any

from . import oomadj
from .errors import APIError
from .spawn import close_fd, spawn_error
from .util import now_ms
from .ws import GOING_AWAY, MAX_FRAME, MESSAGE_TOO_BIG, NORMAL, POLICY_VIOLATION, UNSUPPORTED_DATA, WebSocket

if TYPE_CHECKING:
    from .processes import ProcessManager
    from .users import Identity

MAX_LIVE_SESSIONS = 64
MAX_DEAD_SESSIONS = 64  # finished sessions kept for GET/list/late attach (oldest dropped)
BACKLOG_LIMIT = 1 << 20
READ_CHUNK = MAX_FRAME - 1  # opcode byte + output fits one 64 KiB frame
INPUT_RATE = 1 << 20  # bytes/s of input per client; faster senders are throttled (not dropped)
KILL_GRACE = 3.0
DEFAULT_TERM = "xterm-256color"

OP_DATA = 0x00
OP_RESIZE = 0x01
OP_READY = 0x02
OP_EXIT = 0x03


def _make_controlling_tty() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _resolve(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class PtyClient:
    __slots__ = ("ws", "ready", "closing")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.ready = False
        self.closing = False


class PtySession:
    def __init__(
        self,
        manager: "PtyManager",
        popen: subprocess.Popen[bytes],
        master: int,
        command: str,
        args: list[str],
        rows: int,
        cols: int,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._manager = manager
        self.session_id = os.urandom(8).hex()
        self.token = os.urandom(32).hex()
        self.popen = popen
        self.pid = popen.pid
        self.master = master
        self.command = command
        self.args = args
        self.rows = rows
        self.cols = cols
        self.created_at = now_ms()
        self.ended_at: int | None = None
        self.exit_code: int | None = None
        self.exited = False  # child reaped
        self.output_done = False  # master at EOF/EIO, or given up after drain grace
        self.finished = False
        self.killed = False
        self.clients: list[PtyClient] = []
        self.backlog = bytearray()
        self._stop_reading = False
        self._final_budget = BACKLOG_LIMIT  # read after the drain grace (a grandchild may never stop)
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._input_lock = asyncio.Lock()
        self._kill_timer: asyncio.TimerHandle | None = None
        self._pump_task = asyncio.ensure_future(self._pump())

    def info(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "pid": self.pid,
            "command": self.command,
            "args": self.args,
            "rows": self.rows,
            "cols": self.cols,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "is_alive": not self.exited,
        }

    def check_token(self, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode("utf-8", "replace"), self.token.encode())

    # ------------------------------------------------------------------ output
    async def _pump(self) -> None:
        try:
            while True:
                data = await self._read()
                if data is None:
                    return
                await self._deliver(data)
        finally:
            self.output_done = True
            self._maybe_finish()

    async def _read(self) -> bytes | None:
        while True:
            if self.master < 0 or (self._stop_reading and self._final_budget <= 0):
                return None
            try:
                data = os.read(self.master, READ_CHUNK)
                if self._stop_reading:
                    self._final_budget -= len(data)
                return data or None
            except BlockingIOError:
                pass
            except OSError:  # EIO: every slave fd is closed
                return None
            if self._stop_reading:
                return None
            fut = self._loop.create_future()
            self._readable = fut
            fd = self.master
            self._loop.add_reader(fd, _resolve, fut)
            try:
                await fut
            finally:
                self._readable = None
                if self.master == fd:
                    self._loop.remove_reader(fd)

    async def _deliver(self, data: bytes) -> None:
        ready = [c for c in self.clients if c.ready and c.ws.send_nowait(bytes((OP_DATA,)) + data)]
        if not ready:
            self._buffer(data)
            return
        await asyncio.gather(*(self._drain(c) for c in ready))

    @staticmethod
    async def _drain(client: PtyClient) -> None:
        try:
            await client.ws.drain()
        except (ConnectionError, OSError):
            pass  # the client's receive loop notices and detaches it

    def _buffer(self, data: bytes) -> None:
        self.backlog += data
        over = len(self.backlog) - BACKLOG_LIMIT
        if over > 0:
            del self.backlog[:over]
            for client in self.clients:
                if not client.ready and not client.closing:  # attached but never sent READY
                    client.closing = True
                    self._spawn(client.ws.close(POLICY_VIOLATION, "output buffer overflow before READY"))

    async def _on_ready(self, client: PtyClient) -> None:
        if client.ready:
            return
        pending = bytes(self.backlog)
        self.backlog.clear()
        for off in range(0, len(pending), READ_CHUNK):
            client.ws.send_nowait(bytes((OP_DATA,)) + pending[off : off + READ_CHUNK])
        client.ready = True  # no await since taking the backlog: output order is kept
        if self.finished:
            self._spawn(self._send_exit(client))
        await self._drain(client)

    # -------------------------------------------------------------- lifecycle
    def on_exit(self, status: int) -> None:
        """Reaper hook (raw wait status)."""
        self.popen.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waitpid'ing
        self.exited = True
        self.ended_at = now_ms()
        if os.WIFSIGNALED(status):
            self.exit_code = 128 + os.WTERMSIG(status)
        else:
            self.exit_code = os.WEXITSTATUS(status)
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
        if not self.output_done:
            self._loop.call_later(self._manager.drain_grace, self._stop_pump)
        self._maybe_finish()

    def _stop_pump(self) -> None:
        self._stop_reading = True
        _resolve(self._readable)

    def _maybe_finish(self) -> None:
        if self.finished or not (self.exited and self.output_done):
            return
        self.finished = True
        self._close_master()
        self._manager.session_finished(self)
        if self.killed:
            self.backlog.clear()
            return
        for client in self.clients:
            if client.ready:
                self._spawn(self._send_exit(client))

    async def _send_exit(self, client: PtyClient) -> None:
        code = self.exit_code if self.exit_code is not None else -1
        try:
            await client.ws.send(bytes((OP_EXIT,)) + struct.pack(">i", code))
        except (ConnectionError, OSError):
            return
        await client.ws.close(NORMAL, f"exit:{code}")

    def kill(self) -> None:
        """DELETE: hang up clients, SIGHUP the program, SIGKILL the session later."""
        if self.killed:
            return
        self.killed = True
        for client in self.clients:
            self._spawn(client.ws.close(GOING_AWAY, "session terminated"))
        if not self.exited:
            self._signal(signal.SIGHUP)
            self._signal(signal.SIGCONT)
            self._kill_timer = self._loop.call_later(KILL_GRACE, self.kill_now)

    def kill_now(self) -> None:
        self._kill_timer = None
        if self.exited:
            return
        self._signal(signal.SIGKILL)
        for pid in _session_members(self.pid):  # jobs in other process groups of the session
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except OSError:
            pass

    def _close_master(self) -> None:
        fd = self.master
        if fd < 0:
            return
        self.master = -1
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        close_fd(fd)
        _resolve(self._readable)
        _resolve(self._writable)

    # ------------------------------------------------------------------- input
    async def write_input(self, data: bytes) -> None:
        """Write to the terminal, waiting while its input queue is full."""
        async with self._input_lock:
            view = memoryview(data)
            while view and self.master >= 0:
                try:
                    view = view[os.write(self.master, view) :]
                except BlockingIOError:
                    fut = self._loop.create_future()
                    self._writable = fut
                    fd = self.master
                    self._loop.add_writer(fd, _resolve, fut)
                    try:
                        await fut
                    finally:
                        self._writable = None
                        if self.master == fd:
                            self._loop.remove_writer(fd)
                except OSError:  # hung up
                    return

    def resize(self, rows: int, cols: int) -> None:
        """TIOCSWINSZ; the kernel sends SIGWINCH to the terminal's foreground group."""
        self.rows, self.cols = rows, cols
        if self.master >= 0:
            try:
                _set_winsize(self.master, rows, cols)
            except OSError:
                pass

    # ---------------------------------------------------------------- clients
    async def attach(self, ws: WebSocket) -> None:
        """Serve one WebSocket client until it or the session goes away."""
        if self.killed:
            await ws.close(GOING_AWAY, "session terminated")
            return
        client = PtyClient(ws)
        self.clients.append(client)
        buf = bytearray()
        window_start, window_bytes = self._loop.time(), 0
        try:
            while True:
                msg = await ws.receive()
                if msg is None:
                    return
                if not isinstance(msg.data, (bytes, bytearray)):
                    await ws.close(UNSUPPORTED_DATA, "binary frames only")
                    return
                buf += msg.data
                if len(buf) > MAX_FRAME:
                    await ws.close(MESSAGE_TOO_BIG, f"frames are limited to {MAX_FRAME} bytes")
                    return
                if not msg.message_finished:
                    continue
                frame = bytes(buf)
                buf.clear()
                if not frame:
                    continue
                op = frame[0]
                if op == OP_DATA:
                    now = self._loop.time()
                    if now - window_start >= 1.0:
                        window_start, window_bytes = now, 0
                    window_bytes += len(frame) - 1
                    if window_bytes > INPUT_RATE:  # stop reading the socket for the rest of the second
                        await asyncio.sleep(window_start + 1.0 - now)
                        window_start, window_bytes = self._loop.time(), len(frame) - 1
                    if not self.exited:
                        await self.write_input(frame[1:])
                elif op == OP_RESIZE and len(frame) >= 5:
                    cols, rows = struct.unpack(">HH", frame[1:5])
                    if rows and cols:
                        self.resize(rows, cols)
                elif op == OP_READY:
                    await self._on_ready(client)
        finally:
            self.clients.remove(client)
            if ws.open:
                ws.abort()

    def _spawn(self, coro: Any) -> None:
        self._manager.spawn_task(coro)


class PtyManager:
    def __init__(self, pm: "ProcessManager", drain_grace: float = 0.3) -> None:
        self.pm = pm
        self.drain_grace = drain_grace
        self.sessions: dict[str, PtySession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def live_count(self) -> int:
        return sum(1 for s in self.sessions.values() if not s.exited)

    def create(
        self,
        command: str,
        args: list[str],
        env: dict[str, str],
        working_dir: str | None,
        identity: "Identity",
        rows: int,
        cols: int,
    ) -> PtySession:
        if self.live_count() >= MAX_LIVE_SESSIONS:
            raise APIError(429, "TOO_MANY_SESSIONS", f"at most {MAX_LIVE_SESSIONS} live PTY sessions")
        cwd = working_dir or self.pm.default_workdir
        if not os.path.isdir(cwd):
            raise APIError(400, "INVALID_WORKING_DIR", f"working_dir {cwd!r} is not an existing directory")
        child_env = self.pm.child_env(identity, {"TERM": DEFAULT_TERM, **env})
        master, slave = os.openpty()
        try:
            _set_winsize(slave, rows, cols)
            popen = subprocess.Popen(
                [command, *args],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=child_env,
                close_fds=True,
                start_new_session=True,
                restore_signals=True,
                preexec_fn=_make_controlling_tty,
                **identity.popen_kwargs(),
            )
        except BaseException as exc:
            close_fd(master)
            raise spawn_error(exc, command, cwd) from None
        finally:
            close_fd(slave)
        oomadj.demote(popen.pid)
        os.set_blocking(master, False)
        session = PtySession(self, popen, master, command, args, rows, cols)
        self.pm.watch_pid(popen.pid, session.on_exit)  # before the loop can run the reaper
        self.sessions[session.session_id] = session
        return session

    def get(self, session_id: str) -> PtySession:
        session = self.sessions.get(session_id)
        if session is None:
            raise APIError(404, "SESSION_NOT_FOUND", f"PTY session {session_id} not found")
        return session

    def delete(self, session_id: str) -> None:
        self.get(session_id).kill()
        del self.sessions[session_id]

    def session_finished(self, session: PtySession) -> None:
        dead = [s for s in self.sessions.values() if s.finished]
        for old in dead[: max(0, len(dead) - MAX_DEAD_SESSIONS)]:
            if not old.clients:
                del self.sessions[old.session_id]

    def spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self, grace: float) -> None:
        live = [s for s in self.sessions.values() if not s.exited]
        for session in list(self.sessions.values()):
            session.kill()
        deadline = asyncio.get_running_loop().time() + grace
        while any(not s.exited for s in live) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            self.pm.reap()
        for session in live:
            session.kill_now()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)


def _session_members(sid: int) -> list[int]:
    """Pids whose session id is ``sid`` (from /proc; empty if unreadable)."""
    members = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return members
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(sid).encode():  # state ppid pgrp session
            members.append(int(name))
    return members

