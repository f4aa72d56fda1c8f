"""Load: N running sandboxes on one host, then M concurrent exec streams; memory per idle sandbox.

Starts its own ``cellbox server`` (free ports, no warm pool), creates ``--sandboxes``
sandboxes through the API (``--create-concurrency`` at a time), lets them settle, and
measures what an idle sandbox costs: the host's ``MemAvailable`` before and after (so
page cache, kernel objects and the server's own growth count), and the sum of the
sandboxes' memory cgroups (``memory.usage_in_bytes``, ``total_rss``). Then it opens
``--streams`` concurrent ``/api/v1/processes/run`` SSE streams through the proxy (one per
sandbox, each printing ``--lines`` lines 50 ms apart) and checks every one completes
with all its lines and exit code 0. Everything is deleted at the end.

    .venv/bin/python bench/load.py --sandboxes 200 --streams 100

Prints a table and writes ``bench/results/load-<UTC>.json`` and ``load-latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import host_facts, summarize, table, wait_for_api, write  # noqa: E402

CGROUP_MEMORY = Path("/sys/fs/cgroup/memory/cellbox")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def cgroup_memory(sandbox_id: str) -> tuple[int, int]:
    """(usage_in_bytes, total_rss) of a sandbox's v1 memory cgroup; (0, 0) if absent."""
    base = CGROUP_MEMORY / sandbox_id
    try:
        usage = int((base / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (base / "memory.stat").read_text().splitlines())
        return usage, int(stat.get("total_rss", 0))
    except (OSError, ValueError):
        return 0, 0


async def create(client: httpx.AsyncClient, api: str, sem: asyncio.Semaphore, memory_mb: int) -> tuple[float | None, str | None]:
    async with sem:
        t0 = time.perf_counter()
        try:
            r = await client.post(f"{api}/sandboxes", json={"resources": {"cpus": 0.5, "memory_mb": memory_mb}},
                                  timeout=300)
        except httpx.HTTPError:
            return None, None
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        sid = body.get("sandbox_id")
        if r.status_code != 200 or body.get("status") != "running":
            return None, sid
        return (time.perf_counter() - t0) * 1000, sid


async def stream(client: httpx.AsyncClient, proxy: str, sid: str, lines: int) -> tuple[float | None, str]:
    """One ``/run`` SSE stream; (ms, "") if every line and exit 0 arrived, else (None, why)."""
    run = {"command": "sh", "args": ["-c", f"for i in $(seq 1 {lines}); do echo line $i; sleep 0.05; done"],
           "timeout": 120}
    seen, t0 = 0, time.perf_counter()
    try:
        async with client.stream("POST", f"{proxy}/api/v1/processes/run", json=run,
                                 headers={"Host": f"{sid}.local"}, timeout=180) as resp:
            if resp.status_code != 200:
                return None, f"status {resp.status_code}"
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                ev = json.loads(line[5:])
                if "line" in ev or "data" in ev:
                    seen += 1
                if "exit_code" in ev or "signal" in ev:
                    if ev.get("exit_code") == 0 and seen >= lines:
                        return (time.perf_counter() - t0) * 1000, ""
                    return None, f"exit {ev.get('exit_code')} after {seen}/{lines} lines"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return None, f"stream ended after {seen}/{lines} lines"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandboxes", type=int, default=200)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--lines", type=int, default=20, help="lines each stream prints, 50 ms apart")
    ap.add_argument("--create-concurrency", type=int, default=8)
    ap.add_argument("--memory-mb", type=int, default=256, help="memory limit of each sandbox")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds idle before measuring memory")
    args = ap.parse_args()
    api_port, proxy_port = free_port(), free_port()
    env = {**os.environ, "CELLBOX_WARM_POOL": "0"}
    log = open("/tmp/cellbox-bench-load-server.log", "wb")
    server = subprocess.Popen([sys.executable, "-c", "from cellbox.cli.main import main; main()", "server",
                               "--api-port", str(api_port), "--proxy-port", str(proxy_port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    api, proxy = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{proxy_port}"
    out: dict[str, Any] = {"args": vars(args), "host_at_start": host_facts(), "loadavg_start": os.getloadavg()}
    rows: dict[str, dict[str, Any]] = {}
    sids: list[str] = []
    limits = httpx.Limits(max_connections=args.streams + args.create_concurrency + 20, max_keepalive_connections=50)
    try:
        async with httpx.AsyncClient(limits=limits) as client:
            await wait_for_api(client, api, 300)
            await asyncio.sleep(2)
            avail0 = mem_available_mib()
            t0 = time.perf_counter()
            sem = asyncio.Semaphore(args.create_concurrency)
            made = await asyncio.gather(*[create(client, api, sem, args.memory_mb) for _ in range(args.sandboxes)])
            create_wall = time.perf_counter() - t0
            sids = [sid for _, sid in made if sid]
            running = [sid for ms, sid in made if ms is not None and sid]
            rows[f"create x{args.sandboxes} ({args.create_concurrency} at a time)"] = summarize(
                [ms for ms, _ in made if ms is not None], sum(ms is None for ms, _ in made))
            print(f"  {len(running)}/{args.sandboxes} running after {create_wall:.1f}s; settling", file=sys.stderr)
            await asyncio.sleep(args.settle)
            avail1 = mem_available_mib()
            usage = [cgroup_memory(s) for s in running]
            n = max(1, len(running))
            out["memory"] = {
                "mem_available_before_mib": avail0, "mem_available_after_mib": avail1,
                "host_mib_per_sandbox": (avail0 - avail1) / n,
                "cgroup_usage_mib_per_sandbox": sum(u for u, _ in usage) / n / 2**20,
                "cgroup_rss_mib_per_sandbox": sum(r for _, r in usage) / n / 2**20,
            }
            out["create_wall_s"] = create_wall
            out["loadavg_idle"] = os.getloadavg()

            targets = running[: args.streams]
            t0 = time.perf_counter()
            results = await asyncio.gather(*[stream(client, proxy, s, args.lines) for s in targets])
            out["streams_wall_s"] = time.perf_counter() - t0
            out["stream_failures"] = [why for ms, why in results if ms is None]
            rows[f"exec stream x{len(targets)} concurrent ({args.lines} lines)"] = summarize(
                [ms for ms, _ in results if ms is not None], sum(ms is None for ms, _ in results))
            out["loadavg_end"] = os.getloadavg()
            t0 = time.perf_counter()
            sem = asyncio.Semaphore(16)

            async def delete(sid: str) -> None:
                async with sem:
                    await client.delete(f"{api}/sandboxes/{sid}", timeout=300)

            await asyncio.gather(*[delete(s) for s in sids])
            out["delete_wall_s"] = time.perf_counter() - t0
            sids = []
    finally:
        if sids:  # interrupted: still delete what was made
            with httpx.Client(timeout=300) as c:
                for s in sids:
                    try:
                        c.delete(f"{api}/sandboxes/{s}")
                    except httpx.HTTPError:
                        pass
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        log.close()

    out["results"] = rows
    print(table("Load (ms)", rows))
    m = out.get("memory", {})
    if m:
        print(f"memory per idle sandbox: host MemAvailable -{m['host_mib_per_sandbox']:.1f} MiB, "
              f"cgroup usage {m['cgroup_usage_mib_per_sandbox']:.1f} MiB, rss {m['cgroup_rss_mib_per_sandbox']:.1f} MiB")
    print(f"load average start / idle / end: {out['loadavg_start']} / {out.get('loadavg_idle')} / {out.get('loadavg_end')}")
    if out.get("stream_failures"):
        print("stream failures:", out["stream_failures"][:10])
    print("wrote", write("load", out))


if __name__ == "__main__":
    asyncio.run(main())
