"""Creates through the cluster vs the single-host server, in one run, interleaved.

* cluster: a dev cluster of ``--nodes`` nodes (scripts/cluster-dev.sh), each with a
  fixed warm pool of ``--warm`` sandboxes, and ``--replicas`` control-plane replicas
  on the same PostgreSQL; creates go to the replicas in turn (a load balancer's
  round robin) and each is an outbox round trip (insert, NOTIFY, claim, finish,
  NOTIFY) around the node's warm claim (or a cold boot once its pool ran dry).
* single host: a ``cellbox server`` of its own on free ports (the shared data dir,
  as bench/create_rate.py), with a fixed warm pool of ``--nodes x --warm`` sandboxes:
  the same number of warm sandboxes on the same machine.

Each variant runs ``--n`` blocking creates, 1 at a time and then ``--concurrency`` at
a time, cluster and single host alternating (the order flips every round); pools are
full before each variant, the sandboxes are deleted after it (not timed). Rate =
creates / wall clock; the share of creates a warm sandbox served is read from the
records (``extra.warm``). All nodes and both servers share this machine's 2 cores, so
this measures the cluster path's cost per create, not scale-out.

    .venv/bin/python bench/cluster_create.py [--nodes 3] [--replicas 2] [--warm 4] [--n 24] \\
        [--concurrency 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import auth_headers, summarize, table, write  # noqa: E402

from tests.cluster.devcluster import DevCluster  # noqa: E402
from tests.cluster.pg import free_port  # noqa: E402

MEMORY_MB = 512
WARM_SQL = "SELECT count(*) FROM sandboxes WHERE namespace = '__warm__' AND status = 'running'"


class Single:
    """A single-host ``cellbox server`` on free ports, warm pool fixed at ``warm``."""

    def __init__(self, warm: int) -> None:
        from cellbox.config import load

        self.warm = warm
        self.db_path = load().db_path
        api, proxy = free_port(), free_port()
        env = {**os.environ, "CELLBOX_WARM_POOL": str(warm), "CELLBOX_WARM_AUTOSIZE": "0"}
        self.log = open("/tmp/cellbox-bench-cluster-create-single.log", "ab")
        # Its start-up reconcile must not run while a dev cluster is up (it would take the
        # nodes' cgroups for leftovers): under the dev-cluster lock, released once it serves.
        with open(os.environ.get("CLUSTER_DEV_LOCK", "/tmp/cluster-dev.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "cellbox"), "server", "--api-port", str(api),
                                          "--proxy-port", str(proxy)], env=env, stdout=self.log,
                                         stderr=subprocess.STDOUT)
            self.api = f"http://127.0.0.1:{api}"
            _wait(lambda: _answers(self.api), 300, "the single-host server")
        self.headers = auth_headers()

    def ready(self) -> int:
        with sqlite3.connect(self.db_path) as db:
            return db.execute(WARM_SQL + " AND json_extract(doc, '$.owner') LIKE ?",
                              (f"{self.proc.pid}:%",)).fetchone()[0]

    def create(self, i: int) -> tuple[float, str]:
        with httpx.Client(headers=self.headers, timeout=300) as http:
            t0 = time.perf_counter()
            r = http.post(f"{self.api}/sandboxes", json={"resources": {"cpus": 1.0, "memory_mb": MEMORY_MB}})
            ms = (time.perf_counter() - t0) * 1000
        assert r.status_code == 200 and r.json()["status"] == "running", r.text
        return ms, r.json()["sandbox_id"]

    def warm_share(self, ids: list[str]) -> float:
        with sqlite3.connect(self.db_path) as db:
            docs = [json.loads(db.execute("SELECT doc FROM sandboxes WHERE id = ?", (i,)).fetchone()[0]) for i in ids]
        return sum(bool(d["extra"].get("warm")) for d in docs) / len(ids)

    def delete(self, ids: list[str]) -> None:
        with httpx.Client(headers=self.headers, timeout=300) as http:
            for i in ids:
                http.delete(f"{self.api}/sandboxes/{i}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(180)
        self.log.close()


class Cluster:
    def __init__(self, nodes: int, replicas: int, warm: int) -> None:
        self.nodes, self.warm = nodes, warm
        self.c = DevCluster.up(nodes, CLUSTER_WARM_POOL=str(warm), CELLBOX_WARM_AUTOSIZE="0")
        self.apis = [self.c.api] + [self.c.add_replica().api for _ in range(replicas - 1)]

    def ready(self) -> int:
        """The emptiest node's warm count (all must be full)."""
        counts = []
        for k in range(1, self.nodes + 1):
            with sqlite3.connect(self.c.base / f"node-{k}" / "cellbox.db") as db:
                counts.append(db.execute(WARM_SQL).fetchone()[0])
        return min(counts)

    def create(self, i: int) -> tuple[float, str]:
        with httpx.Client(headers=self.c.auth(), timeout=300) as http:
            t0 = time.perf_counter()
            r = http.post(f"{self.apis[i % len(self.apis)]}/sandboxes", json={"memory_mb": MEMORY_MB})
            ms = (time.perf_counter() - t0) * 1000
        assert r.status_code == 201 and r.json()["status"] == "running", r.text
        return ms, r.json()["id"]

    def placed(self, ids: list[str]) -> list[tuple[str, str]]:
        with psycopg.connect(self.c.dsn) as db:
            return [db.execute("SELECT node_id, local_id FROM sandboxes WHERE id = %s", (i,)).fetchone() for i in ids]

    def warm_share(self, ids: list[str]) -> float:
        warm = 0
        for node, local in self.placed(ids):
            with sqlite3.connect(self.c.base / f"node-{node[-1]}" / "cellbox.db") as db:
                doc = json.loads(db.execute("SELECT doc FROM sandboxes WHERE id = ?", (local,)).fetchone()[0])
            warm += bool(doc["extra"].get("warm"))
        return warm / len(ids)

    def delete(self, ids: list[str]) -> None:
        with self.c.client() as http:
            for i in ids:
                http.delete(f"/sandboxes/{i}")

    def stop(self) -> None:
        self.c.down()


def _answers(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    print(f"  ({what} not ready after {timeout:.0f}s)", file=sys.stderr)


def variant(target, full: int, n: int, conc: int) -> dict:
    _wait(lambda: target.ready() >= full, 300, "warm pools")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        got = list(pool.map(target.create, range(n)))
    wall = time.perf_counter() - t0
    ids = [i for _, i in got]
    out = {**summarize([ms for ms, _ in got]), "creates_per_s": n / wall, "warm_share": target.warm_share(ids)}
    if isinstance(target, Cluster):
        spread: dict[str, int] = {}
        for node, _ in target.placed(ids):
            spread[node] = spread.get(node, 0) + 1
        out["per_node"] = spread
    target.delete(ids)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--warm", type=int, default=4)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    single = Single(args.nodes * args.warm)
    cluster = None
    results: dict[str, dict] = {}
    loads = []
    try:
        cluster = Cluster(args.nodes, args.replicas, args.warm)
        targets = {"cluster": (cluster, args.warm), "single host": (single, single.warm)}
        for rnd in range(args.rounds):
            order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
            for conc in (1, args.concurrency):
                for name in order:
                    target, full = targets[name]
                    key = f"{name}, {conc} at a time, round {rnd + 1}"
                    results[key] = variant(target, full, args.n, conc)
                    loads.append(os.getloadavg()[0])
                    r = results[key]
                    print(f"  {key}: {r['creates_per_s']:.1f}/s p50 {r['p50']:.0f} p95 {r['p95']:.0f} "
                          f"warm {r['warm_share']:.0%}", file=sys.stderr, flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
        single.stop()
    print(table(f"creates: {args.replicas} replicas onto {args.nodes} nodes (warm {args.warm} each) vs one host "
                f"(warm {args.nodes * args.warm}), ms", results))
    for name, r in results.items():
        print(f"{name}: {r['creates_per_s']:.1f}/s, warm {r['warm_share']:.0%}, per node {r.get('per_node', '-')}")
    print(f"load average during the run: {min(loads):.1f}-{max(loads):.1f}")
    path = write("cluster_create", {"params": vars(args), "results": results, "loadavg": loads})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
