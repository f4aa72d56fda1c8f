"""Control-plane replicas (``cellbox server --cluster``) as real processes on loopback,
each with its own data dir, sharing only the database and the key files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .pg import free_port

CELLBOX = Path(sys.executable).parent / "cellbox"


@dataclass
class Replica:
    data_dir: Path
    api: str
    proc: subprocess.Popen
    log: Path

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.api, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Replicas:
    dsn: str
    # The data dir whose key files (cluster.key, secrets.key) every replica copies; None:
    # the first replica's own (it makes them and the first admin key).
    keys_from: Path | None = None
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cellbox-replicas-")))
    running: list[Replica] = field(default_factory=list)

    def start(self) -> Replica:
        """One more replica, with the shared key files."""
        k = len(self.running)
        data = self.base / f"r{k}"
        data.mkdir()
        source = self.keys_from or (self.running[0].data_dir if self.running else None)
        if source is not None:
            for name in ("secrets.key", "cluster.key"):
                shutil.copy2(source / name, data / name)
        api, proxy = free_port(), free_port()
        log = self.base / f"r{k}.log"
        env = {**os.environ, "CELLBOX_DATA_DIR": str(data)}
        proc = subprocess.Popen([str(CELLBOX), "server", "--cluster", self.dsn, "--host", "127.0.0.1",
                                 "--api-port", str(api), "--proxy-port", str(proxy)],
                                env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        replica = Replica(data, f"http://127.0.0.1:{api}", proc, log)
        self.running.append(replica)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"replica {k} exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{replica.api}/health", timeout=1).status_code == 200:
                    return replica
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"replica {k} did not answer: {log.read_text()[-3000:]}")

    def admin_key(self) -> str:
        return (self.running[0].data_dir / "admin.key").read_text().strip()

    def stop(self) -> None:
        for r in self.running:
            r.stop()
        shutil.rmtree(self.base, ignore_errors=True)
