"""Creates through the cluster: a dev cluster of N nodes (scripts/cluster-dev.sh),
creates through the control plane's API, sequential and C at a time, each deleted
after. Nodes run without warm pools in this slice, so every create is a cold boot on
the node plus the outbox round trip (insert, NOTIFY, claim, finish, NOTIFY).

    .venv/bin/python bench/cluster_create.py [--nodes 2] [--n 30] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import summarize, table, write  # noqa: E402

from tests.cluster.devcluster import DevCluster  # noqa: E402


def one(c: DevCluster) -> tuple[float, str]:
    with c.client() as http:
        t0 = time.perf_counter()
        r = http.post("/sandboxes", json={"memory_mb": 256})
        ms = (time.perf_counter() - t0) * 1000
        r.raise_for_status()
        http.delete(f"/sandboxes/{r.json()['id']}")
        return ms, r.json()["node_id"]


def run(c: DevCluster, n: int, conc: int) -> tuple[list[float], dict[str, int], float]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        got = list(pool.map(lambda _: one(c), range(n)))
    wall = time.perf_counter() - t0
    spread: dict[str, int] = {}
    for _, node in got:
        spread[node] = spread.get(node, 0) + 1
    return [ms for ms, _ in got], spread, n / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    c = DevCluster.up(args.nodes)
    try:
        one(c)  # warm: first create on each node unpacks nothing, but loads caches
        results, extra = {}, {}
        for conc in (1, args.concurrency):
            samples, spread, rate = run(c, args.n, conc)
            name = f"create, {conc} at a time"
            results[name] = summarize(samples)
            extra[name] = {"per_node": spread, "creates_per_s": rate}
    finally:
        c.down()
    print(table(f"cluster creates through the API, {args.nodes} nodes, no warm pool (ms)", results))
    for name, e in extra.items():
        print(f"{name}: {e['creates_per_s']:.1f}/s, per node {e['per_node']}")
    path = write("cluster_create", {"nodes": args.nodes, "results": results, "extra": extra})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
