"""Creates per second through the API: warm pool and cold, one client and 8 concurrent.

Starts its own ``cellbox server`` twice on free ports (the settings' data dir): once
with no warm pool (every create cold: storage, network, runc, agent boot) and once
with a fixed pool of ``--count`` pre-booted sandboxes (every create a claim). In each,
``--count`` blocking ``POST /sandboxes`` run by 1 client one after another, then by
``--clients`` clients at once (the pool refilled in between); rate = creates / wall
clock. A create counts only if it answered ``running``; all are deleted after timing.

    .venv/bin/python bench/create_rate.py [--count 40] [--clients 8]
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
from _common import auth_headers, summarize, wait_for_api, write  # noqa: E402
from tti import HEADERS, free_port, wait_pool  # noqa: E402


async def one_create(client: httpx.AsyncClient, api: str) -> tuple[float | None, str | None]:
    t0 = time.perf_counter()
    try:
        r = await client.post(f"{api}/sandboxes", json={"resources": {"cpus": 1.0, "memory_mb": 1024}},
                              headers=HEADERS, timeout=120)
        body = r.json()
        ok = r.status_code == 200 and body.get("status") == "running"
        return ((time.perf_counter() - t0) * 1000 if ok else None), body.get("sandbox_id")
    except Exception as exc:  # noqa: BLE001 - a failure is a data point
        print("  failure:", type(exc).__name__, exc, file=sys.stderr)
        return None, None


async def run_clients(client: httpx.AsyncClient, api: str, count: int, clients: int) -> dict:
    per = [count // clients + (i < count % clients) for i in range(clients)]
    outs: list[tuple[float | None, str | None]] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            outs.append(await one_create(client, api))

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(n) for n in per])
    wall = time.perf_counter() - t0
    samples = [ms for ms, _ in outs if ms is not None]
    await asyncio.gather(*[client.delete(f"{api}/sandboxes/{s}", timeout=120) for _, s in outs if s])
    return {"creates_per_s": len(samples) / wall, "wall_s": wall, "samples_ms": samples,
            **summarize(samples, len(outs) - len(samples))}


async def one_server(pool: int, args: argparse.Namespace, results: dict) -> None:
    api_port, proxy_port = free_port(), free_port()
    env = {**os.environ, "CELLBOX_WARM_POOL": str(pool), "CELLBOX_WARM_AUTOSIZE": "0"}
    log = open("/tmp/cellbox-bench-create-rate-server.log", "ab")
    server = subprocess.Popen([sys.executable, "-c", "from cellbox.cli.main import main; main()", "server",
                               "--api-port", str(api_port), "--proxy-port", str(proxy_port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{api_port}"
    kind = "warm" if pool else "cold"
    try:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        async with httpx.AsyncClient(limits=limits, headers=auth_headers()) as client:
            await wait_for_api(client, api, 300)
            for clients in (1, args.clients):
                if pool:
                    await wait_pool(pool)
                name = f"{kind}, {clients} client{'s' if clients > 1 else ''}"
                results[name] = await run_clients(client, api, args.count, clients)
                print(f"  {name}: {results[name]['creates_per_s']:.1f}/s", file=sys.stderr, flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        log.close()


async def main(args: argparse.Namespace) -> None:
    results: dict[str, dict] = {}
    await one_server(0, args, results)
    await one_server(args.count, args, results)
    print(f"\ncreates per second through the API ({args.count} creates each)")
    print(f"{'variant':<22}{'creates/s':>11}{'ok':>6}{'p50 ms':>9}{'p95 ms':>9}")
    for name, r in results.items():
        print(f"{name:<22}{r['creates_per_s']:>11.1f}{r['ok']:>6}{r['p50']:>9.0f}{r['p95']:>9.0f}")
    path = write("create_rate", {"params": vars(args), "results": results})
    print(f"results: {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--clients", type=int, default=8)
    asyncio.run(main(ap.parse_args()))
