"""Time to interactive: from the create call to the first command's exit 0.

Variants, measured side by side in one run (the machine is shared and noisy):
  cellbox-cold   create with no warm pool (storage, network, runc, agent boot)
  cellbox-warm   create served by the warm pool (limits applied to a pre-booted sandbox)
  runc           the raw OCI runtime: ``runc run -d`` + ``runc exec`` in the same rootfs
                 (no network set-up, no agent; the floor any runc-based design pays)
Each iteration ends with ``node -v`` exiting 0 (ComputeSDK's TTI method); destroy is
not timed. Sequential: N iterations one at a time. Burst: B creates at once.

    .venv/bin/python bench/start.py [-n 100] [--burst 20] [--warm-pool 4]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import plot_boxes, summarize, table, write  # noqa: E402

from cellbox import _proc  # noqa: E402
from cellbox.config import load  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402
from cellbox.storage import btrfs  # noqa: E402

COMMAND = ["node", "-v"]


async def run_in_agent(client: httpx.AsyncClient, ip: str) -> int:
    body = {"command": COMMAND[0], "args": COMMAND[1:], "timeout": 30}
    async with client.stream("POST", f"http://{ip}:9501/api/v1/processes/run", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                ev = json.loads(line[5:])
                if "exit_code" in ev or "signal" in ev:
                    return ev.get("exit_code", -1) if ev.get("exit_code") is not None else -1
    return -1


async def tti_cellbox(mgr: SandboxManager, client: httpx.AsyncClient, label: str = "") -> tuple[float | None, str | None]:
    t0 = time.perf_counter()
    sid = None
    try:
        rec = await asyncio.wait_for(mgr.create(CreateSpec(cpus=1.0, memory_mb=1024)), 60)
        sid = rec.id
        code = await asyncio.wait_for(run_in_agent(client, rec.ip or ""), 10)
        elapsed = (time.perf_counter() - t0) * 1000
        return (elapsed if code == 0 else None), sid
    except Exception as exc:  # noqa: BLE001 - a failure is a data point
        print(f"  failure ({label}):", type(exc).__name__, exc, file=sys.stderr)
        return None, sid


class RawRunc:
    """runc run -d + exec in a snapshot of the default image, outside cellbox."""

    def __init__(self, settings, image_rootfs: Path) -> None:
        self.settings = settings
        self.image_rootfs = image_rootfs
        self.base = settings.data_dir / "tmp" / "bench-raw"
        self.root = Path("/run/cellbox/bench-runc")

    def _config(self, rootfs: Path) -> dict:
        from cellbox.runtime import bundle

        cfg = bundle.config(
            hostname="raw", rootfs=rootfs, agentfs_tree=Path("/nonexistent"), netns_path="",
            cgroups_path="/cellbox-bench/raw", limits=bundle.Limits(1.0, 1024), agent_port=0,
        )
        cfg["process"]["args"] = ["sleep", "infinity"]
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/.cellbox"]
        cfg["linux"]["namespaces"] = [n if n["type"] != "network" else {"type": "network"} for n in cfg["linux"]["namespaces"]]
        return cfg

    async def once(self, i: int) -> float | None:
        name = f"bench-raw-{i}"
        bdir = self.base / name
        rootfs = self.settings.pool / "sandboxes" / name
        await btrfs.snapshot(self.image_rootfs, rootfs)  # untimed: the storage step is cellbox's too
        bdir.mkdir(parents=True, exist_ok=True)
        cfg = self._config(rootfs)
        cfg["linux"]["cgroupsPath"] = f"/cellbox-bench/{name}"
        (bdir / "config.json").write_text(json.dumps(cfg))
        runc = [self.settings.runc, "--root", str(self.root)]
        try:
            t0 = time.perf_counter()
            # The container's init inherits runc's stdio: never a pipe we would wait on.
            proc = await asyncio.create_subprocess_exec(
                *runc, "run", "-d", "--bundle", str(bdir), name,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            if await proc.wait() != 0:
                return None
            res = await _proc.run([*runc, "exec", name, *COMMAND], check=False)
            elapsed = (time.perf_counter() - t0) * 1000
            return elapsed if res.returncode == 0 else None
        finally:
            await _proc.run([*runc, "kill", name, "KILL"], check=False)
            for _ in range(100):
                if (await _proc.run([*runc, "delete", name], check=False)).returncode == 0:
                    break
                await asyncio.sleep(0.01)
            await btrfs.delete(rootfs)
            shutil.rmtree(bdir, ignore_errors=True)


async def sequential(label: str, fn, n: int, cleanup=None) -> dict:
    samples, failures = [], 0
    for i in range(n):
        ms, sid = await fn(i)
        if ms is None:
            failures += 1
        else:
            samples.append(ms)
        if cleanup and sid:
            await cleanup(sid)
    print(f"  {label}: {len(samples)}/{n} ok", file=sys.stderr)
    return {"samples_ms": samples, **summarize(samples, failures)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--warm-pool", type=int, default=4)
    args = ap.parse_args()

    settings = load()
    store = Store(settings.db_path)
    cold = SandboxManager(dataclasses.replace(settings, warm_pool_size=0), store)
    warm = SandboxManager(dataclasses.replace(settings, warm_pool_size=args.warm_pool), store)
    await cold.start()
    await warm.start()
    try:
        await measure(args, settings, cold, warm)
    finally:
        await warm.stop()
        await cold.stop()
        store.close()


async def measure(args, settings, cold: SandboxManager, warm: SandboxManager) -> None:
    image = await cold.images.resolve(settings.default_image)
    raw = RawRunc(settings, image.rootfs)
    results: dict[str, dict] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def wait_pool() -> None:
            for _ in range(400):
                if warm.warm and warm.warm.ready >= args.warm_pool:
                    return
                await asyncio.sleep(0.05)

        await wait_pool()

        async def cold_once(i: int):
            return await tti_cellbox(cold, client, "cold")

        async def warm_once(i: int):
            await wait_pool()  # sequential = one user at a time: the pool refills between them
            return await tti_cellbox(warm, client, "warm")

        async def raw_once(i: int):
            return await raw.once(i), None

        # Interleave in blocks so drift in machine load hits all variants alike.
        seq = {"cellbox-cold": [], "cellbox-warm": [], "runc": []}
        fails = {k: 0 for k in seq}
        block = 10
        for start in range(0, args.n, block):
            for label, fn, mgr in (("cellbox-cold", cold_once, cold), ("cellbox-warm", warm_once, warm), ("runc", raw_once, None)):
                for i in range(start, min(args.n, start + block)):
                    ms, sid = await fn(i)
                    if ms is None:
                        fails[label] += 1
                    else:
                        seq[label].append(ms)
                    if sid and mgr:
                        await mgr.destroy(sid)
        for label in seq:
            results[f"sequential {label}"] = {"samples_ms": seq[label], **summarize(seq[label], fails[label])}

        # Burst: B creates at once, each followed by its first command.
        for label, mgr in (("cellbox-cold", cold), ("cellbox-warm", warm)):
            if label == "cellbox-warm":
                await wait_pool()
            t0 = time.perf_counter()
            outs = await asyncio.gather(*[tti_cellbox(mgr, client) for _ in range(args.burst)])
            wall = (time.perf_counter() - t0) * 1000
            samples = [ms for ms, _ in outs if ms is not None]
            results[f"burst{args.burst} {label}"] = {
                "samples_ms": samples, "wall_ms": wall, **summarize(samples, len(outs) - len(samples)),
            }
            await asyncio.gather(*[mgr.destroy(sid) for _, sid in outs if sid])
        t0 = time.perf_counter()
        outs = await asyncio.gather(*[raw.once(10_000 + i) for i in range(args.burst)])
        samples = [ms for ms in outs if ms is not None]
        results[f"burst{args.burst} runc"] = {
            "samples_ms": samples, "wall_ms": (time.perf_counter() - t0) * 1000,
            **summarize(samples, len(outs) - len(samples)),
        }

    # runc removes each container's cgroup; the parent we named is ours to remove.
    for parent in Path("/sys/fs/cgroup").glob("*/cellbox-bench"):
        try:
            parent.rmdir()
        except OSError:
            pass
    print(table(f"time to interactive (create -> `{' '.join(COMMAND)}` exit 0), ms", results))
    path = write("start", {"command": COMMAND, "args": vars(args), "results": results})
    plot_boxes(results, path.with_suffix(".png"), 'cellbox time to interactive vs raw runc', 'ms (create -> first command exits 0)', 'start-latest.png')
    print(f"results: {path}")


if __name__ == "__main__":
    asyncio.run(main())
