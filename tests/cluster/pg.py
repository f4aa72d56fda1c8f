"""A throwaway PostgreSQL server for one test session: initdb into a temp dir, pg_ctl
on a free loopback port, removed at the end.

The real server (Debian's postgresql 15), not SQLite in its place: SKIP LOCKED,
partial unique indexes, LISTEN/NOTIFY and row locks across connections are what the
cluster store relies on. It runs as the ``postgres`` user because PostgreSQL refuses
to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL server not installed (scripts/setup.sh --test installs postgresql)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, text=True,
                          **kw)


class PgServer:
    """One server, superuser ``postgres`` with trust auth on loopback only (test data)."""

    def __init__(self, listen: str = "127.0.0.1") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cellbox-pg-"))
        self.listen = listen
        self.port = free_port()
        self.pid: int | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.listen}:{self.port}/cellbox"

    def start(self) -> "PgServer":
        shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        bindir = _bindir()
        _as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                     "-E", "UTF8")
        opts = (f"-c listen_addresses={self.listen} -p {self.port} -k {self.dir} -c fsync=off "
                "-c max_connections=200 -c shared_buffers=128MB")
        _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-o", opts, "-w",
                     "-t", "60", "start")
        self.pid = int((data / "postmaster.pid").read_text().split()[0])
        _as_postgres(str(bindir / "createdb"), "-h", str(self.dir), "-p", str(self.port), "cellbox")
        return self

    def restart(self) -> None:
        """Stop fast (connections cut) and start again on the same port and data."""
        data = self.dir / "data"
        _as_postgres(str(_bindir() / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-m", "fast", "-w",
                     "restart")
        self.pid = int((data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        data = self.dir / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", "postgres", "--", str(_bindir() / "pg_ctl"), "-D", str(data),
                            "-m", "immediate", "-w", "stop"], capture_output=True)
        if self.pid is not None:  # pg_ctl failed: end the postmaster we started, by PID
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and os.path.exists(f"/proc/{self.pid}"):
                time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)
