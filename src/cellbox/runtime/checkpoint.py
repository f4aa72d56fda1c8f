"""Checkpoint and restore of a whole sandbox with CRIU, through runc.

runc drives CRIU for us (it knows the container's mounts, cgroups, namespaces and
stdio); we add what runc has no flag for through a CRIU config file named in the
bundle's ``org.criu.config`` annotation (written by :func:`write_criu_config`):

* ``tcp-close``: established TCP connections (a proxy's keep-alive connection to the
  agent, an SSE stream) are restored closed instead of failing the dump; clients
  reconnect. Listening sockets (the agent's :9501, user servers) are restored.
* ``skip-in-flight``: a connection still in a listening socket's accept queue (a
  client that connected a moment before the dump) would fail the whole dump; it is
  dropped instead, and the client sees a reset and retries.
* the network namespace is ours (``/run/netns/cb-<id>``) and given to runc by path,
  so runc tells CRIU it is external: a restore joins whatever netns the new bundle
  names, which is how a clone gets its own address.

Consistency (design rule 3): for a memory snapshot the caller pauses the container
(cgroup freezer), snapshots the root filesystem, then dumps with ``leave_running``:
CRIU keeps the frozen state, so files and memory are from the same instant.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import _proc, ids
from ..errors import CommandFailed
from . import freezer
from .runc import Runc, criu_binary

CRIU_CONFIG_ANNOTATION = "org.criu.config"
CRIU_CONFIG = "tcp-close\nskip-in-flight\n"
LAZY_START_TIMEOUT = 15.0  # seconds for a lazy-pages daemon to open its socket


def write_criu_config(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CRIU_CONFIG)
    return path


@dataclass(frozen=True)
class Timing:
    seconds: float
    image_bytes: int


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _log_errors(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if "Error" in ln and "RLIMIT_NOFILE" not in ln]
    except FileNotFoundError:
        return "(no CRIU log)"
    return "\n".join(lines[-5:]) or "(no error in the CRIU log)"


async def checkpoint(runc: Runc, container_id: str, images: Path, *, leave_running: bool) -> Timing:
    """Dump the container into ``images``; with ``leave_running`` it keeps running."""
    images.mkdir(parents=True, exist_ok=True)
    work = images / "work"
    argv = runc._argv("checkpoint", "--image-path", str(images), "--work-path", str(work))
    if leave_running:
        argv.append("--leave-running")
    t0 = time.perf_counter()
    res = await _proc.run([*argv, container_id], check=False, timeout=600)
    if res.returncode != 0:
        raise CommandFailed(["runc", "checkpoint", container_id], res.returncode,
                            res.stderr.strip()[-500:] + "\n" + _log_errors(work / "dump.log"))
    return Timing(time.perf_counter() - t0, dir_bytes(images))


def dump_complete(images: Path) -> bool:
    """Whether ``images`` holds a dump CRIU finished (its log's last word on success).

    After a crash between a successful dump and the rename that publishes it, this is
    the only evidence left that the images are whole (``inventory.img`` alone is not:
    CRIU writes it early).
    """
    try:
        log = (images / "work" / "dump.log").read_text(errors="replace")
    except OSError:
        return False
    return "Dumping finished successfully" in log and (images / "inventory.img").exists()


def lazy_daemon_procs() -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, argv)`` of every ``criu lazy-pages`` daemon, from one walk of ``/proc``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"lazy-pages" in argv and argv[0].endswith(b"criu"):
            yield int(entry), argv


def lazy_daemon_args() -> set[str]:
    """Every argument of every ``criu lazy-pages`` daemon, from one walk of ``/proc``:
    reconcile asks "is a daemon serving these images?" for each suspended record, and
    ``lazy_daemons`` walks ``/proc`` per question (100,000 walks at 100,000 records)."""
    return {a.decode(errors="replace") for _, argv in lazy_daemon_procs() for a in argv}


def lazy_daemons(images: Path) -> list[int]:
    """PIDs of ``criu lazy-pages`` daemons serving ``images`` (from ``/proc``).

    A server killed during a resume leaves its daemon behind (reparented to init):
    either still waiting for a restore that will never come, or still streaming pages
    into a sandbox that was restored.
    """
    want = str(images).encode()
    return [pid for pid, argv in lazy_daemon_procs() if want in argv]


async def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until ``pids`` have exited (not our children: polled); return those left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    left = pids
    while left and loop.time() < deadline:
        await asyncio.sleep(0.05)
        left = [p for p in left if os.path.exists(f"/proc/{p}") and not _zombie(p)]
    return left


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] == "Z"
    except (OSError, IndexError):
        return True


class LazyPages:
    """A ``criu lazy-pages`` daemon serving one restore's memory from its images.

    With lazy pages (userfaultfd), ``runc restore`` returns as soon as the process
    tree is rebuilt; memory is copied in on first touch and, in the background, all
    the rest. Resume no longer costs time proportional to memory size (256 MiB: 490
    -> 190 ms here). Until the daemon exits, the images must stay and the sandbox must
    not be dumped again: callers await :meth:`wait`.
    """

    def __init__(self, proc: asyncio.subprocess.Process, work: Path) -> None:
        self.proc, self.work = proc, work

    @classmethod
    async def start(cls, images: Path, work: Path) -> "LazyPages":
        work.mkdir(parents=True, exist_ok=True)
        sock = work / "lazy-pages.socket"
        sock.unlink(missing_ok=True)
        with open(os.devnull, "r+b") as null:
            proc = await asyncio.create_subprocess_exec(
                criu_binary(), "lazy-pages", "--images-dir", str(images), "--work-dir", str(work),
                "-o", "lazy-pages.log", stdin=null, stdout=null, stderr=null,
            )
        # The daemon is ready once its socket exists: ~10-40 ms here, but more than the
        # 1 s this used to allow at a load average of 60 on 2 cores (bench/memspeed.py).
        deadline = time.monotonic() + LAZY_START_TIMEOUT
        while time.monotonic() < deadline:
            if sock.exists():
                return cls(proc, work)
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.002)
        proc.kill()
        await proc.wait()
        raise CommandFailed(["criu", "lazy-pages"], proc.returncode or -1, _log_errors(work / "lazy-pages.log"))

    async def wait(self) -> int:
        return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def restore(runc: Runc, container_id: str, bundle: Path, images: Path, work: Path,
                  *, lazy: LazyPages | None = None) -> int:
    """Start a container from ``images`` with ``bundle``'s config; returns its init PID.

    ``work`` receives CRIU's restore log; it must be writable and per restore (many
    clones restore from one image directory at once). With ``lazy``, memory pages are
    served by that daemon (started on the same ``work`` directory).
    """
    work.mkdir(parents=True, exist_ok=True)
    pid_file = bundle / "init.pid"
    pid_file.unlink(missing_ok=True)
    err_file = work / "runc-restore.err"
    # Files, never pipes, for runc's stdio: a restored task must not inherit a pipe we wait on.
    with open(os.devnull, "r+b") as null, open(err_file, "w+b") as err:
        lazy_flag = ["--lazy-pages"] if lazy is not None else []
        proc = await asyncio.create_subprocess_exec(
            *runc._argv("restore", "--detach", *lazy_flag, "--image-path", str(images), "--work-path", str(work),
                        "--bundle", str(bundle), "--pid-file", str(pid_file), container_id),
            stdin=null, stdout=null, stderr=err,
        )
        await proc.wait()
    if proc.returncode != 0:
        msg = err_file.read_text(errors="replace")[-500:]
        raise CommandFailed(["runc", "restore", container_id], proc.returncode or -1,
                            msg + "\n" + _log_errors(work / "restore.log"))
    return int(pid_file.read_text().strip())


def fast_freeze() -> bool:
    """``CELLBOX_FAST_FREEZE=0`` goes back to ``runc pause`` and CRIU's own freeze (for
    ``bench/freeze.py``'s side-by-side runs); read per call for the same reason."""
    return os.environ.get("CELLBOX_FAST_FREEZE", "1") == "1"


async def pause(runc: Runc, container_id: str) -> None:
    # speed (issue 15): the freezer directly, not a `runc pause` process (freezer.py)
    cg = ids.cgroup_path(container_id)
    if fast_freeze() and freezer.available(cg):
        await freezer.freeze(cg)
        return
    await _proc.run(runc._argv("pause", container_id))


async def resume(runc: Runc, container_id: str) -> None:
    cg = ids.cgroup_path(container_id)
    if fast_freeze() and freezer.available(cg):
        freezer.thaw(cg)
        return
    await _proc.run(runc._argv("resume", container_id), check=False)

