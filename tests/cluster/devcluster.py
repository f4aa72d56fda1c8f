"""A two-node cluster from ``scripts/cluster-dev.sh`` for the tests: started once,
removed at the end, with the clients the tests need."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from .pg import free_port

if TYPE_CHECKING:
    from .replicas import Replica, Replicas

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster-dev.sh"
LAST_LOGS = Path(tempfile.gettempdir()) / "cellbox-cluster-last.log"


@dataclass
class DevCluster:
    base: Path
    env: dict[str, str]
    api: str
    proxy: str
    key: str
    _replicas: "Replicas | None" = None

    @classmethod
    def up(cls, n: int, **extra_env: str) -> "DevCluster":
        """``cluster-dev.sh up n``; ``extra_env``: its CLUSTER_* settings (CLUSTER_WARM_POOL)."""
        parent = Path(tempfile.mkdtemp(prefix="cellbox-cluster-"))
        parent.chmod(0o711)  # PostgreSQL (user postgres) must traverse it to its data
        base = parent / "dev"  # the script makes it
        env = {**os.environ, "CLUSTER_DEV": str(base), "CLUSTER_PG_PORT": str(free_port()),
               "CLUSTER_API_PORT": str(free_port()), "CLUSTER_PROXY_PORT": str(free_port()),
               "CLUSTER_S3_PORT": str(free_port()), **extra_env}
        cluster = cls(base, env, f"http://127.0.0.1:{env['CLUSTER_API_PORT']}",
                      f"http://127.0.0.1:{env['CLUSTER_PROXY_PORT']}", "")
        try:
            subprocess.run(["bash", str(SCRIPT), "up", str(n)], env=env, check=True, capture_output=True,
                           text=True, timeout=600)
        except subprocess.CalledProcessError as exc:
            cluster.down()
            raise RuntimeError(f"cluster-dev.sh up failed:\n{exc.stdout}\n{exc.stderr}\n{cluster.logs()}") from None
        cluster.key = (base / "control" / "admin.key").read_text().strip()
        return cluster

    def down(self) -> None:
        """Remove the cluster; its logs are kept in LAST_LOGS for a failure's post-mortem."""
        with contextlib.suppress(OSError):
            LAST_LOGS.write_text(self.logs())
        if self._replicas is not None:
            self._replicas.stop()
        subprocess.run(["bash", str(SCRIPT), "down"], env=self.env, capture_output=True, timeout=300)
        self.base.parent.rmdir() if self.base.parent.exists() and not self.base.exists() else None

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.base.glob("*.log")))

    def add_replica(self) -> "Replica":
        """A second (third…) control-plane replica on the same database and key files:
        a process of its own on free ports, stopped by ``down``."""
        from .replicas import Replicas

        if self._replicas is None:
            self._replicas = Replicas(self.dsn, keys_from=self.base / "control")
        return self._replicas.start()

    def node_pid(self, k: int) -> int:
        return int((self.base / f"node-{k}.pid").read_text())

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.api, headers=self.auth(key), timeout=300)

    def run(self, ref: str, script: str, key: str | None = None) -> tuple[int, str]:
        """Run ``sh -c script`` in the sandbox through the control plane's proxy."""
        r = httpx.post(f"{self.proxy}/api/v1/processes/run", json={"command": "sh", "args": ["-c", script]},
                       headers={**self.auth(key), "Host": f"{ref}.local"}, timeout=120)
        if r.status_code != 200:
            return r.status_code, r.text
        lines = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
        return 200, "\n".join(e["line"] for e in lines if "line" in e)

    def member_key(self, project: str) -> str:
        """A member key of another project, made in the cluster's door (PostgreSQL)."""
        from cellbox.auth.keys import Role, new_key
        from cellbox.cluster.keystore import PgAuthStore

        key_id, full, digest = new_key()
        store = PgAuthStore(self.dsn)
        try:
            store.add_key(key_id, digest, project, Role.MEMBER)
        finally:
            store.close()
        return full

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.env['CLUSTER_PG_PORT']}/cellbox"

    def local_status(self, k: int, sandbox_id: str) -> str | None:
        """The sandbox's status in node ``k``'s own SQLite (its cache)."""
        with sqlite3.connect(self.base / f"node-{k}" / "cellbox.db") as db:
            row = db.execute("SELECT status FROM sandboxes WHERE id = ?", (sandbox_id,)).fetchone()
        return row[0] if row else None

    def wait_for(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (got := pred()):
                return got
            time.sleep(0.5)
        raise AssertionError(f"not within {timeout:g}s: {what}\n{self.logs()}")
