"""Memory-state latency: suspend, resume, snapshot (both types), restore, clone.

For sandboxes holding 16 MiB, 256 MiB and 1 GiB of touched memory (a process that
allocates and writes every page), and filesystem snapshots of sandboxes with 10 MiB vs
1 GiB written. Plain ``runc checkpoint``/``restore`` of the same container is measured
in the same run as the reference ("what CRIU + runc cost without cellbox").

    .venv/bin/python bench/state.py [--rounds 3] [--sizes 16,256,1024]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summarize, write  # noqa: E402

from cellbox import ids  # noqa: E402
from cellbox.config import load  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.snapshot_store import SnapshotType  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402
from cellbox.runtime import checkpoint  # noqa: E402

HOLD = "import time\nb=bytearray({mb}<<20)\nfor i in range(0,len(b),4096): b[i]=1\nprint('ready',flush=True)\ntime.sleep(1e9)"


async def hold_memory(ip: str, mb: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://{ip}:9501", timeout=120) as c:
        r = await c.post("/api/v1/processes", json={"command": "python3", "args": ["-c", HOLD.format(mb=mb)]})
        pid = r.json()["pid"]
        for _ in range(600):
            out = (await c.get(f"/api/v1/processes/{pid}/stdout")).json()
            if "ready" in out["lines"]:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError("memory holder did not get ready")


async def timed(coro) -> float:
    t0 = time.perf_counter()
    await coro
    return (time.perf_counter() - t0) * 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="16,256,1024")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = dataclasses.replace(load(), warm_pool_size=0)
    store = Store(settings.db_path)
    mgr = SandboxManager(settings, store)
    await mgr.start()
    mem = mgr.memory
    rows: dict[str, dict] = {}

    def add(op: str, size: str, ms: float) -> None:
        rows.setdefault(f"{op} @ {size}", {"samples_ms": []})["samples_ms"].append(ms)

    try:
        for mb in sizes:
            label = f"{mb} MiB mem"
            rec = await mgr.create(CreateSpec(name=f"bench-state-{mb}", memory_mb=mb + 512, cpus=2.0))
            try:
                await hold_memory(rec.ip or "", mb)
                for _ in range(args.rounds):
                    add("suspend", label, await timed(mem.suspend(rec.id)))
                    add("resume", label, await timed(mem.resume(rec.id)))
                for kind in (SnapshotType.FILESYSTEM, SnapshotType.MEMORY):
                    for _ in range(args.rounds):
                        t0 = time.perf_counter()
                        snap = await mem.snapshot(rec.id, snapshot_type=kind)
                        add(f"snapshot {kind.value}", label, (time.perf_counter() - t0) * 1000)
                        if kind == SnapshotType.MEMORY:
                            t0 = time.perf_counter()
                            copy = await mem.restore(snap.id)
                            add("restore memory snapshot", label, (time.perf_counter() - t0) * 1000)
                            await mgr.destroy(copy.id)
                        await mem.delete_snapshot(snap.id)
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    copies = await mem.clone(rec.id, 1)
                    add("clone x1", label, (time.perf_counter() - t0) * 1000)
                    for c in copies:
                        if not isinstance(c, Exception):
                            await mgr.destroy(c.id)
                # Reference: raw runc checkpoint + restore of the same container.
                cid = ids.container(rec.id)
                for _ in range(args.rounds):
                    d = settings.data_dir / "tmp" / f"bench-raw-ck-{mb}"
                    shutil.rmtree(d, ignore_errors=True)
                    add("raw runc checkpoint", label, await timed(checkpoint.checkpoint(mgr.runc, cid, d, leave_running=False)))
                    add("raw runc restore", label, await timed(checkpoint.restore(
                        mgr.runc, cid, settings.sandboxes_dir / rec.id, d, d / "rwork")))
                    shutil.rmtree(d, ignore_errors=True)
            finally:
                await mgr.destroy(rec.id)

        for written in (10, 1024):
            label = f"{written} MiB written"
            rec = await mgr.create(CreateSpec(cpus=2.0, disk_mb=20000))
            try:
                async with httpx.AsyncClient(timeout=300) as c:
                    body = {"command": "sh", "args": ["-c", f"head -c {written}M /dev/urandom > /fill && sync"]}
                    async with c.stream("POST", f"http://{rec.ip}:9501/api/v1/processes/run", json=body) as r:
                        async for _ in r.aiter_lines():
                            pass
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    snap = await mem.snapshot(rec.id, snapshot_type=SnapshotType.FILESYSTEM)
                    add("snapshot filesystem", label, (time.perf_counter() - t0) * 1000)
                    await mem.delete_snapshot(snap.id)
            finally:
                await mgr.destroy(rec.id)
    finally:
        await mgr.stop()
        store.close()

    for v in rows.values():
        v.update(summarize(v["samples_ms"]))
    print(f"memory-state latency, ms (median of {args.rounds})")
    print(f"{'operation':<44}{'p50':>10}{'min':>10}{'max':>10}")
    for k, v in rows.items():
        print(f"{k:<44}{v['p50']:>10.1f}{v['min']:>10.1f}{v['max']:>10.1f}")
    path = write("state", {"args": vars(args), "results": rows})
    plot(rows, sizes, path.with_suffix(".png"))
    print(f"results: {path}")


def plot(rows: dict, sizes: list[int], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ops = sorted({k.split(" @ ")[0] for k in rows if "mem" in k})
    fig, ax = plt.subplots(figsize=(8, 5))
    for op in ops:
        ys = [rows.get(f"{op} @ {mb} MiB mem", {}).get("p50") for mb in sizes]
        ax.plot(sizes, ys, marker="o", label=op)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("touched memory (MiB)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title("cellbox memory-state latency vs memory size")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    (out.parent / "state-latest.png").write_bytes(out.read_bytes())


if __name__ == "__main__":
    asyncio.run(main())
