"""Time to interactive through the HTTP API and the proxy (ComputeSDK's method).

TTI = ``POST /sandboxes`` (blocking, as the Tensorlake SDK sends it) + ``node -v`` run
through the sandbox proxy (``POST /api/v1/processes/run``, ``Host: {id}.local``) until
it exits 0. Destroy is not timed. Modes (spec §7.2):
  sequential  N sandboxes one at a time
  staggered   N sandboxes started ``--stagger`` ms apart (each timed on its own)
  burst       N sandboxes at once
  burst2      a burst, then (``--gap`` s later) a second one: the self-sizing warm pool
Reports median, p95, p99, success rate (after trimming nothing: failures count).
Starts its own ``cellbox server`` on free ports (warm pool size ``--warm-pool``) with
this interpreter, so ``PYTHONPATH`` chooses the code under test (compare two
checkouts by alternating runs, ``--label`` names each). For the burst it also
reports where the CPU went: the server, the commands it ran, this client and the
sandboxes (cgroup ``cpuacct``), and ``--profile FILE`` records the server with
py-spy (collapsed stacks).

    .venv/bin/python bench/tti.py [-n 100] [--burst 100] [--stagger 200] [--warm-pool 4]
                                  [--modes sequential,staggered,burst] [--label X] [--profile F]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import auth_headers, node_v_through_proxy, plot_boxes, summarize, table, wait_for_api, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADERS = {"X-Tensorlake-Request-Timeout-Ms": "120000", "X-Tensorlake-Request-Timeout-Grace-Ms": "5000"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Where each TTI went (issue 15's profile): the create call and the `node -v` after it,
# in ms, and the refusals (503/429 with Retry-After: overload, not failure of a sandbox).
SPLIT: dict[str, list[float]] = {"create_ms": [], "run_ms": []}
REFUSED: list[int] = []


async def tti(client: httpx.AsyncClient, api: str, proxy: str) -> tuple[float | None, str | None]:
    t0 = time.perf_counter()
    sid = None
    try:
        r = await client.post(f"{api}/sandboxes", json={"resources": {"cpus": 1.0, "memory_mb": 1024}},
                              headers=HEADERS, timeout=120)
        body = r.json()
        sid = body.get("sandbox_id")
        if r.status_code != 200 or body.get("status") != "running":
            if r.status_code in (429, 503):
                REFUSED.append(r.status_code)
            print("  create failed:", r.status_code, str(body)[:200], file=sys.stderr)
            return None, sid
        t1 = time.perf_counter()
        ok = await node_v_through_proxy(client, proxy, sid)
        t2 = time.perf_counter()
        SPLIT["create_ms"].append((t1 - t0) * 1000)
        SPLIT["run_ms"].append((t2 - t1) * 1000)
        return ((t2 - t0) * 1000 if ok else None), sid
    except Exception as exc:  # noqa: BLE001 - a failure is a data point
        print("  failure:", type(exc).__name__, exc, file=sys.stderr)
        return None, sid


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time of a process (or of its finished children: the commands
    it ran, e.g. runc, ip, btrfs), from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    i = 13 if children else 11
    return (int(fields[i]) + int(fields[i + 1])) / os.sysconf("SC_CLK_TCK")


def sandbox_cpu_seconds(sandbox_id: str) -> float:
    """CPU time of everything a sandbox ran (cgroup v1 cpuacct; 0 if unreadable)."""
    from cellbox import ids

    for path in (f"/sys/fs/cgroup/cpuacct{ids.cgroup_path(sandbox_id)}/cpuacct.usage",):
        try:
            return int(Path(path).read_text()) / 1e9
        except (OSError, ValueError):
            pass
    return 0.0


def all_sandbox_cpu() -> dict[str, float]:
    """CPU time so far of every sandbox cgroup on the host (warm ones included), so the
    burst's share can be told from what a warm sandbox spent booting."""
    from cellbox import ids

    base = Path(f"/sys/fs/cgroup/cpuacct/{ids.CGROUP_PARENT}")
    return {d.name: sandbox_cpu_seconds(d.name) for d in base.iterdir() if d.is_dir()} if base.is_dir() else {}


async def native_node_v(n: int) -> dict:
    """The reference, side by side in the same run: ``node -v`` in the default image's
    own root filesystem, run on the host (``chroot``, no sandbox, no API). It is the
    floor a sandbox's ``node -v`` can reach: the image's node (Debian's nodejs 18, a
    26 KB launcher and 19 shared libraries) costs ~50 ms here, against ~12 ms for the
    host's statically linked node 20, which the issue's "~22 ms" may have meant."""
    from cellbox.config import load
    from cellbox.storage.images import OciLayout

    settings = load()
    rootfs = (await OciLayout(settings).resolve(settings.default_image)).rootfs
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["chroot", str(rootfs), "/usr/bin/node", "-v"], check=True, capture_output=True)
        samples.append((time.perf_counter() - t) * 1000)
    return {"samples_ms": samples, **summarize(samples, 0)}


async def wait_pool(size: int, timeout: float = 300) -> None:
    """Wait until the server's warm pool is full (read from its database: warm
    sandboxes are running records in the reserved namespace)."""
    import sqlite3

    from cellbox.config import load

    db = sqlite3.connect(str(load().db_path))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            n = db.execute("SELECT COUNT(*) FROM sandboxes WHERE namespace='__warm__' AND status='running'").fetchone()[0]
            if n >= size:
                return
            await asyncio.sleep(0.5)
    finally:
        db.close()
    print(f"  (warm pool not full after {timeout:.0f}s)", file=sys.stderr)


async def run_burst(client: httpx.AsyncClient, api: str, proxy: str, server: subprocess.Popen, args) -> dict:
    """``args.burst`` TTIs at once; their latencies and where the burst's CPU went."""
    t0 = time.perf_counter()
    spy = None
    if args.profile:
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                str(server.pid), "--format", "raw", "-o", args.profile, "-r", "200"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(1)
        t0 = time.perf_counter()
    cpu0 = cpu_seconds(server.pid), time.process_time(), cpu_seconds(server.pid, children=True)
    before = all_sandbox_cpu()
    outs = await asyncio.gather(*[tti(client, api, proxy) for _ in range(args.burst)])
    cpu1 = cpu_seconds(server.pid), time.process_time(), cpu_seconds(server.pid, children=True)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    samples = [ms for ms, _ in outs if ms is not None]
    split = _take_split()
    sandbox_cpu = sum(sandbox_cpu_seconds(sid) - before.get(sid, 0.0) for _, sid in outs if sid)
    return {
        "samples_ms": samples, "wall_ms": (time.perf_counter() - t0) * 1000,
        # where the burst's CPU went: the server (API + proxy + manager), the commands it
        # ran (runc, ip, btrfs; counted once they have exited), this client, and the
        # sandboxes (agent + node, after the claim); 2 cores
        "cpu_s": {"server": cpu1[0] - cpu0[0], "server_commands": cpu1[2] - cpu0[2],
                  "client": cpu1[1] - cpu0[1], "sandboxes": sandbox_cpu},
        "time_to_first_ready_ms": min(samples) if samples else None, **split,
        **summarize(samples, len(outs) - len(samples)), "sids": [sid for _, sid in outs]}


def _take_split() -> dict:
    """The create / `node -v` medians and the refusals since the last call (then reset)."""
    import statistics

    out = {f"{k}_p50": (statistics.median(v) if v else None) for k, v in SPLIT.items()}
    out["refused"] = len(REFUSED)
    for v in SPLIT.values():
        v.clear()
    REFUSED.clear()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--stagger", type=int, default=200, help="ms between starts in staggered mode")
    ap.add_argument("--warm-pool", default="4", help="CELLBOX_WARM_POOL for the server; 'default' leaves it unset")
    ap.add_argument("--gap", type=float, default=45.0, help="seconds between the bursts of mode burst2")
    ap.add_argument("--modes", default="sequential,staggered,burst", help="comma-separated subset (also: burst2)")
    ap.add_argument("--label", default="", help="names the code under test in the results")
    ap.add_argument("--profile", metavar="FILE", help="py-spy the server during the burst (collapsed stacks)")
    args = ap.parse_args()
    modes = set(args.modes.split(","))
    api_port, proxy_port = free_port(), free_port()
    env = dict(os.environ)
    if args.warm_pool != "default":
        env["CELLBOX_WARM_POOL"] = args.warm_pool
    pool_floor = int(env.get("CELLBOX_WARM_POOL", "2"))
    log = open("/tmp/cellbox-bench-tti-server.log", "wb")
    # this interpreter, so PYTHONPATH picks the code under test (a worktree, an older checkout)
    server = subprocess.Popen([sys.executable, "-c", "from cellbox.cli.main import main; main()", "server",
                               "--api-port", str(api_port), "--proxy-port", str(proxy_port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    api, proxy = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{proxy_port}"
    results: dict[str, dict] = {}
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=50)
    try:
        async with httpx.AsyncClient(limits=limits, headers=auth_headers()) as client:
            await wait_for_api(client, api, 300)
            await wait_pool(pool_floor)

            async def cleanup(sids: list[str | None]) -> None:
                await asyncio.gather(*[client.delete(f"{api}/sandboxes/{s}", timeout=120) for s in sids if s])

            if "sequential" in modes:
                results["reference: `node -v` in the image, on the host"] = await native_node_v(args.n)
            samples, fails = [], 0
            for _ in range(args.n if "sequential" in modes else 0):
                ms, sid = await tti(client, api, proxy)
                samples.append(ms) if ms is not None else None
                fails += ms is None
                await cleanup([sid])
            if "sequential" in modes:
                results[f"sequential x{args.n}"] = {"samples_ms": samples, **_take_split(), **summarize(samples, fails)}
                print(f"  sequential done: median {results[f'sequential x{args.n}']['p50']:.0f} ms", file=sys.stderr)
                await wait_pool(pool_floor)

            async def delayed(i: int):
                await asyncio.sleep(i * args.stagger / 1000)
                return await tti(client, api, proxy)

            if "staggered" in modes:
                t0 = time.perf_counter()
                outs = await asyncio.gather(*[delayed(i) for i in range(args.n)])
                samples = [ms for ms, _ in outs if ms is not None]
                results[f"staggered x{args.n} ({args.stagger} ms)"] = {
                    "samples_ms": samples, "wall_ms": (time.perf_counter() - t0) * 1000,
                    **summarize(samples, len(outs) - len(samples))}
                await cleanup([sid for _, sid in outs])
                print("  staggered done", file=sys.stderr)
                await wait_pool(pool_floor)

            async def burst(name: str) -> None:
                results[name] = await run_burst(client, api, proxy, server, args)
                await cleanup(results[name].pop("sids"))
                print(f"  {name} done: p95 {results[name]['p95']:.0f} ms", file=sys.stderr)

            if "burst" in modes:
                await burst(f"burst x{args.burst}")
            if "burst2" in modes:
                # Issue 15: the second burst, --gap s after the first, shows what a pool
                # that saw the first burst's demand does; the first shows the cold cost.
                await burst(f"first burst x{args.burst}")
                await asyncio.sleep(args.gap)
                await burst(f"second burst x{args.burst} (+{args.gap:.0f} s)")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        log.close()

    print(table("TTI through the API + proxy (create -> `node -v` exit 0), ms", results))
    for k, v in results.items():
        if "wall_ms" in v:
            print(f"  {k}: wall clock {v['wall_ms'] / 1000:.1f} s")
        if v.get("create_ms_p50") is not None:
            print(f"  {k}: create p50 {v['create_ms_p50']:.0f} ms, `node -v` p50 {v['run_ms_p50']:.0f} ms, "
                  f"refused (429/503) {v['refused']}")
        if "cpu_s" in v:
            print(f"  {k}: CPU s " + ", ".join(f"{n} {c:.2f}" for n, c in v["cpu_s"].items()))
    path = write("tti", {"args": vars(args), "results": results})
    plot_boxes(results, path.with_suffix(".png"), 'cellbox TTI via HTTP API + proxy (ComputeSDK method)', 'ms', 'tti-latest.png')
    print(f"results: {path}")


if __name__ == "__main__":
    asyncio.run(main())
