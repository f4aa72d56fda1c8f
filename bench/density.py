"""Density: what an idle sandbox costs, and whether claims, exec and the API hold up at a count.

Starts its own ``cellbox server`` (free ports, the settings' data dir, a fixed warm
pool of ``--pool``). At 0 sandboxes and again with ``--count`` idle running sandboxes
(created through the API, ``--create-concurrency`` at a time) it measures, side by side:

* claim latency: ``POST /sandboxes`` served by the warm pool (pool refilled first);
* exec: ``node -v`` through the proxy in an existing sandbox (p50);
* API: ``GET /sandboxes`` (list) and ``GET /sandboxes/{id}`` p95.

Memory per idle sandbox = drop of ``MemAvailable`` over the count (page cache, kernel
objects and the server's growth included) and the sum of their memory cgroups; from it,
how many idle sandboxes this host's memory would hold. All sandboxes are deleted.

    .venv/bin/python bench/density.py [--count 100] [--pool 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import auth_headers, node_v_through_proxy, summarize, wait_for_api, write  # noqa: E402
from tti import HEADERS, free_port, wait_pool  # noqa: E402

from cellbox import ids  # noqa: E402

CREATE = {"resources": {"cpus": 1.0, "memory_mb": 1024}}


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cgroup_mb(sids: list[str]) -> float:
    total = 0
    for sid in sids:
        try:
            total += int(Path(f"/sys/fs/cgroup/memory{ids.cgroup_path(sid)}/memory.usage_in_bytes").read_text())
        except OSError:
            pass
    return total / (1 << 20)


async def timed(coro) -> float:
    t0 = time.perf_counter()
    await coro
    return (time.perf_counter() - t0) * 1000


async def probe(client: httpx.AsyncClient, api: str, proxy: str, pool: int, some: str) -> dict:
    """Claim, exec and API latencies at the current count."""
    claims, made = [], []
    for _ in range(pool):
        t0 = time.perf_counter()
        r = await client.post(f"{api}/sandboxes", json=CREATE, headers=HEADERS, timeout=120)
        claims.append((time.perf_counter() - t0) * 1000)
        made.append(r.json().get("sandbox_id"))
    execs = []
    for _ in range(10):
        t0 = time.perf_counter()
        if await node_v_through_proxy(client, proxy, some):
            execs.append((time.perf_counter() - t0) * 1000)
    lists = [await timed(client.get(f"{api}/sandboxes", timeout=60)) for _ in range(30)]
    gets = [await timed(client.get(f"{api}/sandboxes/{some}", timeout=60)) for _ in range(100)]
    await asyncio.gather(*[client.delete(f"{api}/sandboxes/{s}", timeout=120) for s in made if s])
    return {"claim_ms": summarize(claims), "exec_ms": summarize(execs), "list_ms": summarize(lists),
            "get_ms": summarize(gets)}


async def run(args: argparse.Namespace) -> dict:
    api_port, proxy_port = free_port(), free_port()
    env = {**os.environ, "CELLBOX_WARM_POOL": str(args.pool), "CELLBOX_WARM_AUTOSIZE": "0"}
    log = open("/tmp/cellbox-bench-density-server.log", "wb")
    server = subprocess.Popen([sys.executable, "-c", "from cellbox.cli.main import main; main()", "server",
                               "--api-port", str(api_port), "--proxy-port", str(proxy_port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    api, proxy = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{proxy_port}"
    sids: list[str] = []
    out: dict = {}
    try:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        async with httpx.AsyncClient(limits=limits, headers=auth_headers()) as client:
            await wait_for_api(client, api, 300)
            first = (await client.post(f"{api}/sandboxes", json=CREATE, headers=HEADERS, timeout=120)).json()
            sids.append(first["sandbox_id"])
            await wait_pool(args.pool)
            out["at 1"] = await probe(client, api, proxy, args.pool, sids[0])
            await wait_pool(args.pool)
            await asyncio.sleep(args.settle)
            before = mem_available_mb()
            sem = asyncio.Semaphore(args.create_concurrency)

            async def one() -> None:
                async with sem:
                    r = await client.post(f"{api}/sandboxes", json=CREATE, headers=HEADERS, timeout=120)
                    if r.status_code == 200 and r.json().get("status") == "running":
                        sids.append(r.json()["sandbox_id"])

            await asyncio.gather(*[one() for _ in range(args.count - 1)])
            await wait_pool(args.pool)
            await asyncio.sleep(args.settle)
            n = len(sids) - 1  # made since `before`
            drop = before - mem_available_mb()
            out["memory"] = {"sandboxes": len(sids), "mem_available_drop_mb": drop,
                             "per_sandbox_mb": drop / max(1, n), "cgroups_mb_per_sandbox": cgroup_mb(sids) / len(sids)}
            out[f"at {len(sids)}"] = await probe(client, api, proxy, args.pool, sids[0])
            await asyncio.gather(*[client.delete(f"{api}/sandboxes/{s}", timeout=120) for s in sids])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        log.close()
    return out


def main(args: argparse.Namespace) -> None:
    out = asyncio.run(run(args))
    mem = out["memory"]
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 20)
    hold = int(total_mb * 0.9 / max(1e-6, mem["per_sandbox_mb"]))
    print(f"\nidle sandboxes: {mem['sandboxes']}; MemAvailable drop {mem['per_sandbox_mb']:.1f} MiB each "
          f"(cgroups {mem['cgroups_mb_per_sandbox']:.1f} MiB); 90 % of {total_mb / 1024:.0f} GiB holds ~{hold}")
    print(f"{'at count':<12}{'claim p50':>10}{'claim p95':>10}{'exec p50':>10}{'list p95':>10}{'get p95':>10}  (ms)")
    for k, v in out.items():
        if k.startswith("at "):
            print(f"{k:<12}{v['claim_ms']['p50']:>10.1f}{v['claim_ms']['p95']:>10.1f}{v['exec_ms']['p50']:>10.1f}"
                  f"{v['list_ms']['p95']:>10.1f}{v['get_ms']['p95']:>10.1f}")
    path = write("density", {"params": vars(args), "results": out, "host_memory_mb": total_mb,
                             "would_hold_idle": hold})
    print(f"results: {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--create-concurrency", type=int, default=8)
    ap.add_argument("--settle", type=float, default=5.0)
    main(ap.parse_args())
