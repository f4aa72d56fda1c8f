"""runc, driven as a command: run, state, kill, delete (checkpoint/restore come later).

All containers live under our own ``--root`` (``/run/cellbox/runc``), so ``runc list``
there shows only cellbox's sandboxes and nothing else on the host is touched.

``runc delete -f`` in runc 1.1 sleeps a fixed 100 ms before it checks the container
has died; ``kill KILL`` followed by ``delete`` takes about 13 ms (baselines §1), so
destroy does that instead.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import _proc
from ..errors import CommandFailed


@dataclass(frozen=True)
class State:
    status: str  # created | running | paused | stopped
    pid: int


class Runc:
    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root

    def _argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), "--criu", criu_binary(), *args]

    async def run_detached(self, container_id: str, bundle: Path) -> int:
        """Create and start the container; returns its init's PID.

        The container's init inherits runc's stdio, which is /dev/null: never a pipe
        we would wait on (it would stay open as long as the sandbox lives), and never a
        host file, which CRIU could not dump ("Can't lookup mount for fd=1": the file
        is outside the container's mounts). runc's own errors go to ``runc.log``
        beside the bundle via ``--log``.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        pid_file = bundle / "init.pid"
        runc_log = bundle / "runc.log"
        with open(os.devnull, "r+b") as out:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "--root", str(self.root), "--log", str(runc_log), "--log-format", "json",
                "run", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file),
                "--no-new-keyring", container_id,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            )
            await proc.wait()
        if proc.returncode != 0:
            raise CommandFailed(["runc", "run", container_id], proc.returncode or -1, _errors(runc_log))
        return int(pid_file.read_text().strip())

    async def state(self, container_id: str) -> State | None:
        res = await _proc.run(self._argv("state", container_id), check=False)
        if res.returncode != 0:
            return None
        doc = json.loads(res.stdout)
        return State(status=doc["status"], pid=int(doc.get("pid") or 0))

    async def states(self) -> dict[str, str] | None:
        """Every container's status in one ``runc list`` (None if it failed): the sweep's
        full check asked ``runc state`` once per sandbox, 1,000 processes every 30 s at
        1,000 sandboxes."""
        res = await _proc.run(self._argv("list", "--format", "json"), check=False)
        if res.returncode != 0:
            return None
        try:
            doc = json.loads(res.stdout or "null") or []
            return {str(c["id"]): str(c["status"]) for c in doc}
        except (ValueError, KeyError, TypeError):
            return None

    async def list_ids(self) -> list[str]:
        res = await _proc.run(self._argv("list", "-q"), check=False)
        return res.stdout.split() if res.returncode == 0 else []

    async def destroy(self, container_id: str) -> None:
        """Kill and delete; a container that is already gone is not an error."""
        await _proc.run(self._argv("kill", container_id, "KILL"), check=False)
        for _ in range(200):
            res = await _proc.run(self._argv("delete", container_id), check=False)
            if res.returncode == 0 or "does not exist" in res.stderr:
                return
            await asyncio.sleep(0.005)
        await _proc.run(self._argv("delete", "--force", container_id))


def criu_binary() -> str:
    """The CRIU that runc drives and that serves lazy pages: ``CELLBOX_CRIU`` (read per
    call: ``bench/memspeed.py`` runs two builds side by side), else ``criu`` on PATH."""
    return os.environ.get("CELLBOX_CRIU") or "criu"


def _errors(runc_log: Path) -> str:
    """The error messages of a runc --log-format json log, newest last."""
    msgs = []
    try:
        for line in runc_log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "fatal"):
                msgs.append(entry.get("msg", ""))
    except FileNotFoundError:
        return "(no runc log)"
    return "; ".join(msgs[-3:]) or "(no error logged)"
