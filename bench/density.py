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


def meminfo() -> dict[str, float]:
    """/proc/meminfo in MiB: the kernel's own objects (slab, page tables, kernel stacks)."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0]) / 1024
    return out


def host_counts(pid: int) -> dict[str, float]:
    """What the host holds, to divide by the count: tasks, netns, the server's fds and RSS."""
    mi = meminfo()
    tasks = int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = next(int(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
               if ln.startswith("VmRSS:")) / 1024
    netns = len(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else 0
    return {"tasks": tasks, "netns": netns, "server_fds": fds, "server_rss_mb": rss, "slab_mb": mi["Slab"],
            "page_tables_mb": mi["PageTables"], "kernel_stack_mb": mi["KernelStack"],
            "mem_available_mb": mi["MemAvailable"], "cached_mb": mi["Cached"]}


def agent_memory(sids: list[str], sample: int = 20) -> dict[str, float]:
    """Mean smaps_rollup of a sample of the sandboxes' init (the agent): RSS, PSS (page
    cache shared across sandboxes is divided among them), anonymous."""
    import sqlite3

    from cellbox.config import load

    db = sqlite3.connect(str(load().db_path))
    keys = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Dirty")
    tot = dict.fromkeys(keys, 0.0)
    n = 0
    for sid in sids[:sample]:
        row = db.execute("SELECT json_extract(doc, '$.init_pid') FROM sandboxes WHERE id=?", (sid,)).fetchone()
        if not row or not row[0]:
            continue
        try:
            text = Path(f"/proc/{row[0]}/smaps_rollup").read_text()
        except OSError:
            continue
        n += 1
        for line in text.splitlines():
            k = line.split(":")[0]
            if k in tot:
                tot[k] += int(line.split()[1]) / 1024
    db.close()
    return {f"{k.lower()}_mb": v / max(1, n) for k, v in tot.items()} | {"sampled": n}


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
    pages = [await timed(client.get(f"{api}/sandboxes?limit=100", timeout=60)) for _ in range(50)]
    gets = [await timed(client.get(f"{api}/sandboxes/{some}", timeout=60)) for _ in range(100)]
    await delete_all(client, api, [s for s in made if s])
    return {"claim_ms": summarize(claims), "exec_ms": summarize(execs), "list_ms": summarize(lists),
            "list100_ms": summarize(pages), "get_ms": summarize(gets)}


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
            host_before = host_counts(server.pid)
            sem = asyncio.Semaphore(args.create_concurrency)
            failures: list[str] = []

            async def one() -> None:
                async with sem:
                    r = await client.post(f"{api}/sandboxes", json=CREATE, headers=HEADERS, timeout=120)
                    if r.status_code == 200 and r.json().get("status") == "running":
                        sids.append(r.json()["sandbox_id"])
                    else:
                        failures.append(f"{r.status_code} {r.text[:200]}")

            t_create = time.monotonic()
            await asyncio.gather(*[one() for _ in range(args.count - 1)])
            create_s = time.monotonic() - t_create
            await wait_pool(args.pool)
            await asyncio.sleep(args.settle)
            n = len(sids) - 1  # made since `before`
            drop = before - mem_available_mb()
            host_after = host_counts(server.pid)
            out["memory"] = {"sandboxes": len(sids), "mem_available_drop_mb": drop,
                             "per_sandbox_mb": drop / max(1, n), "cgroups_mb_per_sandbox": cgroup_mb(sids) / len(sids)}
            out["host"] = {"before": host_before, "after": host_after,
                           "per_sandbox": {k: (host_after[k] - host_before[k]) / max(1, n) for k in host_before}}
            out["agent"] = agent_memory(sids[1:])
            out["creates"] = {"made": n, "failed": len(failures), "first_failures": failures[:5],
                              "seconds": create_s, "per_s": n / create_s if create_s else 0.0,
                              "load_avg": os.getloadavg()}
            print(f"made {n} in {create_s:.0f} s ({n / max(create_s, 1e-9):.1f}/s), {len(failures)} failed; "
                  f"load {os.getloadavg()}", flush=True)
            out[f"at {len(sids)}"] = await probe(client, api, proxy, args.pool, sids[0])
            report(out, args)  # before the teardown: a failure there must not lose the figures
            t_del = time.monotonic()
            errors = await delete_all(client, api, sids)
            print(f"deleted {len(sids)} in {time.monotonic() - t_del:.0f} s, {len(errors)} errors {errors[:3]}",
                  flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        log.close()
    return out


async def delete_all(client: httpx.AsyncClient, api: str, sids: list[str], concurrency: int = 8) -> list[str]:
    """Delete at most ``concurrency`` at once (1,000 at once overran the client's pool)."""
    sem, errors = asyncio.Semaphore(concurrency), []

    async def one(sid: str) -> None:
        async with sem:
            try:
                r = await client.delete(f"{api}/sandboxes/{sid}", timeout=300)
                if r.status_code >= 400:
                    errors.append(f"{sid}: {r.status_code}")
            except httpx.HTTPError as exc:
                errors.append(f"{sid}: {type(exc).__name__}")

    await asyncio.gather(*[one(s) for s in sids])
    return errors


def main(args: argparse.Namespace) -> None:
    asyncio.run(run(args))


def report(out: dict, args: argparse.Namespace) -> None:
    mem = out["memory"]
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 20)
    hold = int(total_mb * 0.9 / max(1e-6, mem["per_sandbox_mb"]))
    print(f"\nidle sandboxes: {mem['sandboxes']}; MemAvailable drop {mem['per_sandbox_mb']:.1f} MiB each "
          f"(cgroups {mem['cgroups_mb_per_sandbox']:.1f} MiB); 90 % of {total_mb / 1024:.0f} GiB holds ~{hold}")
    per = out["host"]["per_sandbox"]
    print("per sandbox: " + ", ".join(f"{k} {v:.3f}" for k, v in per.items()))
    print("agent (mean of sample): " + ", ".join(f"{k} {v:.2f}" for k, v in out["agent"].items()))
    print(f"{'at count':<12}{'claim p50':>10}{'claim p95':>10}{'exec p50':>10}{'list p95':>10}{'list100 p95':>12}"
          f"{'get p95':>10}  (ms)")
    for k, v in out.items():
        if k.startswith("at "):
            print(f"{k:<12}{v['claim_ms']['p50']:>10.1f}{v['claim_ms']['p95']:>10.1f}{v['exec_ms']['p50']:>10.1f}"
                  f"{v['list_ms']['p95']:>10.1f}{v['list100_ms']['p95']:>12.1f}{v['get_ms']['p95']:>10.1f}")
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
