"""Run the agent as a child process on the host, for tests and tooling.

Not used by the agent itself (and harmless in the sandbox bundle).  The agent
is started with ``--port 0``; its ready line on stderr (``listening on
HOST:PORT``) tells us the port, so there is no free-port race.  It runs in its
own session, so ``stop()`` can take down the agent *and* any wrapper (e.g.
``unshare``) with one ``killpg`` -- by process-group id, never by name.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence

SRC_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_READY = re.compile(r"listening on (\S+):(\d+) pid=(\d+)")


class AgentProcess:
    """``with AgentProcess(root=...) as agent: httpx.get(agent.url + ...)``."""

    def __init__(
        self,
        *args: str,
        root: str | None = None,
        python: str = sys.executable,
        wrapper: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = list(args)
        self.root = root
        self.python = python
        self.wrapper = list(wrapper)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.agent_pid = 0  # pid as the agent sees itself (1 inside a pid namespace)
        self._log = tempfile.NamedTemporaryFile(prefix="cellbox-agent-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        with open(self._log.name, errors="replace") as f:
            return f.read()

    def start(self, timeout: float = 15.0) -> "AgentProcess":
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = SRC_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [*self.wrapper, self.python, "-m", "cellbox.agent", "--host", "127.0.0.1", "--port", "0"]
        if self.root is not None:
            cmd += ["--root", self.root]
        cmd += self.args
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _READY.search(self.log_text())
            if match:
                self.port = int(match.group(2))
                self.agent_pid = int(match.group(3))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited early ({self.proc.returncode}):\n{self.log_text()}")
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"agent not ready after {timeout}s:\n{self.log_text()}")

    def stop(self, timeout: float = 8.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole session; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # wrapper leftovers, or a hung agent
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(5)
        self._log.close()
        return proc.returncode

    def cleanup(self) -> None:
        self.stop()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass

    def __enter__(self) -> "AgentProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
