"""CRIU post-copy between hosts: the source's lazy dump and the target's remote
lazy-pages daemon (live migration, cluster/livemigrate.py).

Source: ``runc checkpoint --lazy-pages --page-server ADDR:PORT --status-fd N`` dumps
everything but the memory pages (process tree, registers, fds, mappings: small),
then CRIU's page server listens on ADDR:PORT and hands pages to one client; once that
client has all of them the tasks are killed and runc removes the container. runc
writes a byte to the status fd when the page server is up (CRIU's "status-ready").

Target: ``criu lazy-pages --page-server --address SRC --port PORT`` connects to it;
``runc restore --lazy-pages`` rebuilds the tree and hands each task's userfaultfd to
that daemon, which fetches a page on first touch and, in the background, all the rest.

TLS and the listen address cannot be given to ``runc checkpoint`` (it talks to CRIU
over RPC, which takes only the bundle's CRIU config file for anything extra): they are
appended to the sandbox's own config file for the dump and taken out again after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from .. import _proc
from ..errors import CommandFailed
from .checkpoint import LazyPages, _log_errors
from .runc import Runc

# Remote lazy-pages daemons by the memory-image dir they serve (the target's
# migration code waits for them; NodeRuntime.restore starts them).
DAEMONS: dict[str, LazyPages] = {}


class LazyDump:
    """A running ``runc checkpoint --lazy-pages`` (its own process group, so an abort
    takes CRIU with it)."""

    def __init__(self, proc: asyncio.subprocess.Process, ready_r: int, images: Path, conf: Path,
                 conf_before: str) -> None:
        self.proc, self._ready_r, self.images = proc, ready_r, images
        self._conf, self._conf_before = conf, conf_before

    @classmethod
    async def start(cls, runc: Runc, container_id: str, images: Path, *, address: str, port: int,
                    criu_conf: Path, extra_conf: str) -> "LazyDump":
        images.mkdir(parents=True, exist_ok=True, mode=0o700)
        before = criu_conf.read_text()
        criu_conf.write_text(before + f"address {address}\n" + extra_conf)
        r, w = os.pipe()
        try:
            with open(os.devnull, "r+b") as null, open(images / "runc.err", "wb") as err:
                proc = await asyncio.create_subprocess_exec(
                    *runc._argv("checkpoint", "--lazy-pages", "--page-server", f"{address}:{port}",
                                "--status-fd", str(w), "--image-path", str(images),
                                "--work-path", str(images / "work"), container_id),
                    stdin=null, stdout=null, stderr=err, pass_fds=(w,), start_new_session=True)
        except BaseException:
            os.close(r)
            criu_conf.write_text(before)
            raise
        finally:
            os.close(w)
        return cls(proc, r, images, criu_conf, before)

    async def ready(self, timeout: float = 120.0) -> None:
        """Until the page server listens (the dump is complete); ``CommandFailed`` if the
        dump failed instead (runc exits, the status pipe closes without a byte)."""
        loop = asyncio.get_running_loop()
        got = await asyncio.wait_for(loop.run_in_executor(None, os.read, self._ready_r, 1), timeout)
        self.restore_conf()  # the config is read: the sandbox's file is its own again
        if got != b"\0":
            await self.proc.wait()
            raise CommandFailed(["runc", "checkpoint", "--lazy-pages"], self.proc.returncode or -1,
                                self.errors())

    def errors(self) -> str:
        try:
            err = (self.images / "runc.err").read_text(errors="replace")[-300:]
        except OSError:
            err = ""
        return err + "\n" + _log_errors(self.images / "work" / "dump.log")

    def restore_conf(self) -> None:
        with contextlib.suppress(OSError):
            self._conf.write_text(self._conf_before)

    async def wait(self) -> int:
        """Until every page was fetched (CRIU kills the tasks then) or the transfer failed."""
        rc = await self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self._ready_r)
        return rc

    async def abort(self) -> None:
        """Stop the dump (and CRIU under runc): the tasks stay, frozen; the caller thaws
        them and lifts CRIU's network lock (:func:`unlock_network`)."""
        self.restore_conf()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        await self.wait()


async def unlock_network(netns_path: str) -> None:
    """Remove CRIU's network-lock tables (``inet CRIU-<pid>``) from a sandbox's netns: a
    lazy dump that did not finish leaves them, and they drop every packet."""
    res = await _proc.run(["nsenter", f"--net={netns_path}", "nft", "list", "tables"], check=False)
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table" and parts[2].startswith("CRIU"):
            await _proc.run(["nsenter", f"--net={netns_path}", "nft", "delete", "table", parts[1], parts[2]],
                            check=False)


async def start_remote_daemon(images: Path, work: Path, address: str, port: int, tls_args: list[str]) -> LazyPages:
    """``criu lazy-pages`` fetching ``images``' pages from a source's page server."""
    work.mkdir(parents=True, exist_ok=True)
    sock = work / "lazy-pages.socket"
    sock.unlink(missing_ok=True)
    with open(os.devnull, "r+b") as null:
        proc = await asyncio.create_subprocess_exec(
            "criu", "lazy-pages", "--page-server", "--address", address, "--port", str(port), *tls_args,
            "--images-dir", str(images), "--work-dir", str(work), "-o", "lazy-pages.log",
            stdin=null, stdout=null, stderr=null)
    for _ in range(2500):
        if sock.exists():
            daemon = LazyPages(proc, work)
            DAEMONS[str(images)] = daemon
            return daemon
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.002)
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
    raise CommandFailed(["criu", "lazy-pages", "--page-server"], proc.returncode or -1,
                        _log_errors(work / "lazy-pages.log"))
