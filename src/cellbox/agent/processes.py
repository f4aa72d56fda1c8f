"""Spawning, reaping, signalling and output capture of sandbox processes.

PID 1 duties.  Inside the sandbox the agent is the container's init, so every
orphan in the pid namespace is reparented to it and must be reaped or it stays
a zombie forever.  Therefore the agent does *not* use asyncio's subprocess
support (its child watchers either poll ``waitpid(pid)`` per child from a
thread or install their own SIGCHLD handler, and none of them reap strangers).
Instead ``ProcessManager.reap`` runs from a ``loop.add_signal_handler(SIGCHLD)``
callback and loops ``os.waitpid(-1, WNOHANG)`` until nothing is left: statuses of
known pids are dispatched to their ``Process``; unknown pids (orphans) are just
reaped.

Children are started by ``spawn.py`` (``subprocess.Popen`` used purely as a
fork/exec primitive).  We never call ``Popen.wait/poll``: the SIGCHLD reaper
owns every exit status, and it sets ``popen.returncode`` so ``Popen.__del__``
never queues the pid for its own ``waitpid`` later (which could steal the
status of a recycled pid).  The agent stays single-threaded, so fork is safe.

Every child gets its own session / process group (``start_new_session``), so
signals, timeouts and DELETE use ``os.killpg`` and reach the whole tree.

stdout/stderr are pipes read non-blocking via ``loop.add_reader`` and split
into lines (see ``output.py``).  A process counts as *finished* (final /run
event, follow streams end) when it has been reaped and both pipes hit EOF --
or, if a backgrounded grandchild keeps a pipe open, ``drain_grace`` seconds
after the exit.  In that case the pipe is *not* closed (closing it would
SIGPIPE the daemon the user just started); late lines still land in the log.

Other subsystems that fork (PTY sessions) register their children with
``watch_pid``.  Supervised processes (``managed.py``) are sequences of
``Process`` incarnations sharing one ``OutputLog``; ``spawn(log_=, managed=,
on_finish=)``, ``forget`` and ``retire`` are the hooks they use.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from typing import Any, Callable

from . import oomadj
from .budget import OutputBudget
from .errors import APIError
from .journal import Journal
from .oom import OomCounter
from .output import STDERR, STDOUT, LineSplitter, OutputLog
from .spawn import SpawnSpec, close_fd, spawn_child
from .users import Identity, build_env
from .util import log, now_ms

READ_CHUNK = 64 * 1024


class _Pipe:
    """Parent end of one output pipe plus its line splitter."""

    __slots__ = ("fd", "stream", "splitter")

    def __init__(self, fd: int, stream: str) -> None:
        self.fd = fd
        self.stream = stream
        self.splitter = LineSplitter()


class Process:
    """One spawned process and everything the API reports about it."""

    def __init__(
        self,
        handle: int,
        popen: subprocess.Popen[bytes],
        spec: SpawnSpec,
        log_: OutputLog,
        managed: Any = None,
        on_finish: Callable[["Process"], None] | None = None,
    ) -> None:
        self.handle = handle
        self.pid: int = popen.pid
        self.popen = popen
        self.command = spec.command
        self.args = list(spec.args)
        self.name = spec.name
        self.started_at = now_ms()
        self.ended_at: int | None = None
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.oom_killed = False
        self.timed_out = False
        self.killed_by_agent = False
        self.exited = False
        self.log = log_
        self.stdin_mode_pipe = spec.stdin_pipe
        self.stdin_fd: int | None = None
        self.stdin_lock = asyncio.Lock()
        self.stdin_waiter: asyncio.Future[None] | None = None
        self.pipes: list[_Pipe] = []
        self.oom_before: int | None = None
        self.finished = asyncio.Event()
        self.timer: asyncio.TimerHandle | None = None
        # Supervised ("managed") incarnations share one OutputLog owned by their
        # ``managed.ManagedProcess``; only that object may finish the log.
        self.managed = managed
        self.on_finish = on_finish

    @property
    def status(self) -> str:
        if not self.exited:
            return "running"
        if self.oom_killed:
            return "oom_killed"
        if self.signal is not None:
            return "signaled"
        return "exited"

    @property
    def reason(self) -> str:
        """Why it ended, as reported in the final /run event."""
        if self.timed_out and self.signal is not None:
            return "timed_out"
        return self.status

    def info(self) -> dict[str, Any]:
        """``ProcessInfo`` (spec section 3.1)."""
        data: dict[str, Any] = {
            "pid": self.pid,
            "handle": self.handle,
            "status": self.status,
            "command": self.command,
            "args": self.args,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "oom_killed": self.oom_killed,
            "stdin_writable": self.stdin_fd is not None,
        }
        if self.name is not None:
            data["name"] = self.name
        if self.managed is not None:
            data["managed"] = self.managed.info()
        return data

    def exit_event(self) -> dict[str, Any]:
        """Final ``/run`` SSE event.  Deliberately minimal: the SDK parses events
        by shape (untagged), so no pid/line keys may appear here."""
        reason = self.reason
        if reason == "timed_out":
            return {"exit_code": -9, "signal": signal.SIGKILL.value, "reason": reason}
        if reason == "oom_killed":
            return {"signal": self.signal, "oom_killed": True, "reason": reason}
        if self.signal is not None:
            return {"signal": self.signal, "reason": reason}
        return {"exit_code": self.exit_code, "reason": reason}


class ProcessManager:
    """Owns all processes; the single place that calls ``waitpid``."""

    def __init__(
        self,
        *,
        oom: OomCounter,
        default_workdir: str = "/",
        inherit_env: bool = True,
        max_lines: int = 100_000,
        max_bytes: int = 16 << 20,
        max_finished: int = 256,
        finished_bytes_budget: int = 256 << 20,
        drain_grace: float = 0.3,
        budget: OutputBudget | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.budget = budget if budget is not None else OutputBudget()
        self._oom = oom
        self.default_workdir = default_workdir
        self._inherit_env = inherit_env
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._max_finished = max_finished
        self._finished_budget = finished_bytes_budget
        self._drain_grace = drain_grace
        self._next_handle = 1
        self.journal = Journal()
        self._procs: dict[int, Process] = {}  # handle -> process (insertion = start order)
        self._by_pid: dict[int, Process] = {}  # newest process per pid
        self._running: dict[int, Process] = {}  # pid -> not-yet-reaped process
        self._finished_order: list[Process] = []
        self.reaped_unknown = 0
        self._exit_hooks: dict[int, Callable[[int], None]] = {}

    # ----------------------------------------------------------------- lookup
    def all(self) -> list[Process]:
        return list(self._procs.values())

    def counts(self) -> tuple[int, int]:
        return len(self._running), len(self._procs)

    def find(self, ref: str) -> Process | None:
        """``{p}`` is a PID (all digits) or a process name (newest wins)."""
        if ref.isdigit():
            return self._by_pid.get(int(ref))
        found = None
        for proc in self._procs.values():
            if proc.name == ref:
                found = proc
        return found

    # ------------------------------------------------------------------ spawn
    def child_env(self, identity: Identity, overrides: dict[str, str]) -> dict[str, str]:
        return build_env(identity, os.environ if self._inherit_env else None, overrides)

    def new_log(self) -> OutputLog:
        return OutputLog(self._max_lines, self._max_bytes, self.budget)

    def spawn(
        self,
        spec: SpawnSpec,
        *,
        log_: OutputLog | None = None,
        managed: Any = None,
        on_finish: Callable[[Process], None] | None = None,
    ) -> Process:
        """Fork/exec ``spec``; raises APIError(400) if it cannot be executed.

        ``log_``/``managed``/``on_finish`` are for supervised incarnations: they
        write into the supervisor's shared log, are not retired into the
        finished-retention queue on their own (see ``retire``/``forget``), and
        ``on_finish(proc)`` runs once the incarnation is finished.
        """
        cwd = spec.working_dir or self.default_workdir
        env = self.child_env(spec.identity, spec.env)
        oom_before = self._oom.read()
        self.budget.refresh()  # a claimed warm sandbox got its memory limit after boot
        child = spawn_child(spec, cwd, env)
        oomadj.demote(child.popen.pid)
        log_ = log_ if log_ is not None else self.new_log()
        proc = Process(self._next_handle, child.popen, spec, log_, managed, on_finish)
        self._next_handle += 1
        proc.oom_before = oom_before
        proc.stdin_fd = child.stdin_fd
        self._procs[proc.handle] = proc
        self._by_pid[proc.pid] = proc
        self._running[proc.pid] = proc
        for fd, stream in ((child.stdout_fd, STDOUT), (child.stderr_fd, STDERR)):
            if fd is not None:
                pipe = _Pipe(fd, stream)
                proc.pipes.append(pipe)
                self._loop.add_reader(fd, self._on_readable, proc, pipe)
        if spec.timeout:
            proc.timer = self._loop.call_later(spec.timeout, self._on_timeout, proc)
        return proc

    def watch_pid(self, pid: int, on_exit: Callable[[int], None]) -> None:
        """Let another subsystem (e.g. PTY sessions) own a child it forked itself.

        Since this manager reaps *every* child, anything else that forks must
        register here to learn its child's raw wait status.  Register before
        returning to the event loop after the fork, so the reaper cannot miss it.
        """
        self._exit_hooks[pid] = on_exit

    # ------------------------------------------------- supervised incarnations
    def forget(self, proc: Process, keep_pid_alias: bool = False) -> None:
        """Drop a finished incarnation from the table (its supervisor replaced it).

        With ``keep_pid_alias`` a lookup of its pid still finds it (and through
        ``proc.managed`` the supervised process) until the pid is reused or
        ``drop_alias`` is called.
        """
        self._procs.pop(proc.handle, None)
        if proc in self._finished_order:
            self._finished_order.remove(proc)
        if not keep_pid_alias:
            self.drop_alias(proc)

    def drop_alias(self, proc: Process) -> None:
        if self._by_pid.get(proc.pid) is proc:
            del self._by_pid[proc.pid]

    def retire(self, proc: Process) -> None:
        """A supervised process stopped for good: subject it to normal retention."""
        if proc.handle in self._procs and proc not in self._finished_order:
            self._finished_order.append(proc)
            self._evict()

    # ----------------------------------------------------------------- output
    def _emit(self, proc: Process, stream: str, line: str, ts: int) -> None:
        """A line into the process's log and the host collector's journal (journal.py)."""
        proc.log.append(stream, line, ts)
        self.journal.add(proc.pid, proc.name, proc.command, stream, ts, line)

    def _on_readable(self, proc: Process, pipe: _Pipe) -> None:
        try:
            data = os.read(pipe.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            ts = now_ms()
            for line in pipe.splitter.feed(data):
                self._emit(proc, pipe.stream, line, ts)
            return
        self._close_pipe(proc, pipe)
        self._maybe_finish(proc)

    def _close_pipe(self, proc: Process, pipe: _Pipe) -> None:
        self._loop.remove_reader(pipe.fd)
        close_fd(pipe.fd)
        ts = now_ms()
        for line in pipe.splitter.flush():
            self._emit(proc, pipe.stream, line, ts)
        proc.pipes.remove(pipe)

    def _drain_now(self, proc: Process) -> None:
        """Read whatever is already sitting in the pipes (no waiting)."""
        for pipe in list(proc.pipes):
            while True:
                try:
                    data = os.read(pipe.fd, READ_CHUNK)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    self._close_pipe(proc, pipe)
                    break
                ts = now_ms()
                for line in pipe.splitter.feed(data):
                    self._emit(proc, pipe.stream, line, ts)

    # ---------------------------------------------------------------- reaping
    def reap(self) -> None:
        """SIGCHLD handler: reap every exited child, known or orphan."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            proc = self._running.pop(pid, None)
            if proc is not None:
                self._on_exit(proc, status)
                continue
            hook = self._exit_hooks.pop(pid, None)
            if hook is not None:
                try:
                    hook(status)
                except Exception as exc:  # a bug in the hook must not stop the reaper
                    log(f"exit hook for pid {pid} failed: {type(exc).__name__}: {exc}")
            else:
                self.reaped_unknown += 1  # an orphan reparented to us (PID 1 / subreaper)

    def _on_exit(self, proc: Process, status: int) -> None:
        proc.exited = True
        proc.ended_at = now_ms()
        proc.popen.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waitpid'ing later
        if os.WIFSIGNALED(status):
            proc.signal = os.WTERMSIG(status)
        else:
            proc.exit_code = os.WEXITSTATUS(status)
        if proc.signal == signal.SIGKILL and not proc.killed_by_agent and proc.oom_before is not None:
            after = self._oom.read()
            if after is not None and after > proc.oom_before:
                proc.oom_killed = True
        if proc.timer is not None:
            proc.timer.cancel()
            proc.timer = None
        self._close_stdin(proc)
        if proc.pipes:
            self._drain_now(proc)
        if proc.pipes:
            self._loop.call_later(self._drain_grace, self._finish, proc)
        else:
            self._finish(proc)

    def _maybe_finish(self, proc: Process) -> None:
        if proc.exited and not proc.pipes:
            self._finish(proc)

    def _finish(self, proc: Process) -> None:
        if proc.finished.is_set():
            return
        self._drain_now(proc)
        ts = now_ms()
        for pipe in proc.pipes:  # still held open by a grandchild: emit the partial tail
            for line in pipe.splitter.flush():
                self._emit(proc, pipe.stream, line, ts)
        proc.finished.set()
        if proc.managed is None:
            proc.log.finish()
            self._finished_order.append(proc)
            self._evict()
        if proc.on_finish is not None:
            try:
                proc.on_finish(proc)
            except Exception as exc:
                log(f"finish hook for pid {proc.pid} failed: {type(exc).__name__}: {exc}")

    def _evict(self) -> None:
        """Forget the oldest finished processes beyond the retention limits."""
        total = sum(p.log.bytes for p in self._finished_order)
        while self._finished_order and (
            len(self._finished_order) > self._max_finished or total > self._finished_budget
        ):
            old = self._finished_order.pop(0)
            total -= old.log.bytes
            self._procs.pop(old.handle, None)
            if old.managed is not None:  # its older incarnations' pid aliases go too
                for pid in [pid for pid, p in self._by_pid.items() if p.managed is old.managed]:
                    del self._by_pid[pid]
            elif self._by_pid.get(old.pid) is old:
                del self._by_pid[old.pid]
            for pipe in list(old.pipes):
                self._close_pipe(old, pipe)

    # ---------------------------------------------------------------- signals
    def _owns_group(self, proc: Process) -> bool:
        """May we still killpg(proc.pid)?  Not if a newer process reuses the pid."""
        return self._by_pid.get(proc.pid) is proc

    def send_signal(self, proc: Process, sig: int) -> bool:
        """Deliver ``sig`` to the process group; False if nothing received it."""
        if not self._owns_group(proc):
            return False
        if sig == signal.SIGKILL and not proc.exited:
            proc.killed_by_agent = True
        try:
            os.killpg(proc.pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def kill(self, proc: Process) -> None:
        self.send_signal(proc, signal.SIGKILL)

    def _on_timeout(self, proc: Process) -> None:
        proc.timer = None
        if proc.exited:
            return
        proc.timed_out = True
        self.kill(proc)

    # ------------------------------------------------------------------ stdin
    async def write_stdin(self, proc: Process, data: bytes) -> None:
        """Write all of ``data`` to the process's stdin pipe, waiting for room."""
        if proc.stdin_fd is None:
            raise stdin_error(proc)
        async with proc.stdin_lock:
            view = memoryview(data)
            while view:
                fd = proc.stdin_fd
                if fd is None:
                    raise stdin_error(proc)
                try:
                    n = os.write(fd, view)
                    view = view[n:]
                except BlockingIOError:
                    await self._wait_writable(proc, fd)
                except (BrokenPipeError, OSError):
                    self._close_stdin(proc)
                    raise APIError(409, "STDIN_CLOSED", "the process closed its stdin") from None

    async def _wait_writable(self, proc: Process, fd: int) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        proc.stdin_waiter = fut
        self._loop.add_writer(fd, _set_done, fut)
        try:
            await fut
        finally:
            proc.stdin_waiter = None
            if proc.stdin_fd == fd:
                self._loop.remove_writer(fd)

    def close_stdin(self, proc: Process) -> None:
        if not proc.stdin_mode_pipe:
            raise stdin_error(proc)
        self._close_stdin(proc)

    def _close_stdin(self, proc: Process) -> None:
        fd = proc.stdin_fd
        if fd is None:
            return
        proc.stdin_fd = None
        self._loop.remove_writer(fd)
        close_fd(fd)
        waiter = proc.stdin_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # the writer loop then sees stdin_fd is None

    # --------------------------------------------------------------- shutdown
    async def shutdown(self, grace: float) -> None:
        """SIGTERM every running group, wait up to ``grace`` s, then SIGKILL."""
        for proc in list(self._running.values()):
            self.send_signal(proc, signal.SIGTERM)
        deadline = self._loop.time() + grace
        while self._running and self._loop.time() < deadline:
            await asyncio.sleep(0.05)
            self.reap()
        for proc in list(self._running.values()):
            self.kill(proc)
        if self._running:
            log(f"killed {len(self._running)} process group(s) at shutdown")


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def stdin_error(proc: Process) -> APIError:
    if not proc.stdin_mode_pipe:
        return APIError(400, "STDIN_NOT_WRITABLE", "process was not started with stdin_mode 'pipe'")
    return APIError(400, "STDIN_NOT_WRITABLE", "stdin of this process is closed")
