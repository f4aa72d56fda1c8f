"""Tensorlake's SQLite benchmark (our rewrite), sandbox vs native, side by side in one run.

``bench/sqlite_tl_workload.py`` (three modes, eleven operations, ``random.seed(42)``)
runs natively with the host's Python with its DB under the host's ``/tmp`` and inside
a fresh sandbox with its DB under the sandbox's ``/tmp`` (the sandbox's root: a
snapshot in the storage pool), alternating which goes first each round. Prints
sandbox / native per mode and per operation, writes JSON and a PNG.

The pool is whatever the settings say (``CELLBOX_DATA_DIR``, ``CELLBOX_POOL_DEVICE``),
so running it against two data dirs compares two backings; ``--label`` names the run.

    .venv/bin/python bench/sqlite_tl.py [--rounds 3] [--modes default,fsync,large] [--label loop]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write  # noqa: E402

from cellbox.config import load  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402

WORKLOAD = Path(__file__).with_name("sqlite_tl_workload.py")


def native(mode: str) -> dict[str, float]:
    out = subprocess.run(["/usr/bin/python3", str(WORKLOAD), mode, "/tmp/cb-sqlite-tl"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


async def in_sandbox(client: httpx.AsyncClient, ip: str, mode: str) -> dict[str, float]:
    body = {"command": "python3", "args": ["/root/sqlite_tl_workload.py", mode, "/tmp/cb-sqlite-tl"], "timeout": 900}
    lines: list[str] = []
    async with client.stream("POST", f"http://{ip}:9501/api/v1/processes/run", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                ev = json.loads(line[5:])
                if ev.get("stream") == "stdout":
                    lines.append(ev["line"])
                if "exit_code" in ev and ev["exit_code"] != 0:
                    raise RuntimeError(f"workload failed in the sandbox: {ev}")
    return json.loads(lines[-1])


def plot(ratios: dict[str, dict[str, float]], label: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ops = list(next(iter(ratios.values())))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(ratios)
    for i, (mode, per) in enumerate(ratios.items()):
        ax.bar([x + i * width for x in range(len(ops))], [per[o] for o in ops], width, label=mode)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.05, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks([x + width for x in range(len(ops))], ops, rotation=30, ha="right")
    ax.set_ylabel("sandbox / native (median)")
    ax.set_title(f"Tensorlake SQLite benchmark, sandbox ÷ native ({label})")
    ax.legend()
    fig.tight_layout()
    out = RESULTS / f"sqlite_tl-{label}.png"
    fig.savefig(out, dpi=110)
    return out


async def main(args: argparse.Namespace) -> None:
    modes = args.modes.split(",")
    settings = dataclasses.replace(load(), warm_pool_size=0)
    store = Store(settings.db_path)
    mgr = SandboxManager(settings, store)
    await mgr.start()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {m: {"native": [], "sandbox": []} for m in modes}
    try:
        rec = await mgr.create(CreateSpec(cpus=2.0, memory_mb=4096, disk_mb=8192))
        try:
            async with httpx.AsyncClient(timeout=1000) as client:
                r = await client.put(f"http://{rec.ip}:9501/api/v1/files", params={"path": "/root/sqlite_tl_workload.py"},
                                     content=WORKLOAD.read_bytes())
                r.raise_for_status()
                for i in range(args.rounds):
                    for mode in modes:
                        for side in (("native", "sandbox") if i % 2 == 0 else ("sandbox", "native")):
                            res = (await asyncio.to_thread(native, mode) if side == "native"
                                   else await in_sandbox(client, rec.ip or "", mode))
                            runs[mode][side].append(res)
                    print(f"  round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            await mgr.destroy(rec.id)
    finally:
        await mgr.stop()
        store.close()
    report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    med = {m: {s: {op: statistics.median(r[op] for r in rs) for op in rs[0]} for s, rs in sides.items()}
           for m, sides in runs.items()}
    ratios = {m: {op: med[m]["sandbox"][op] / med[m]["native"][op] for op in med[m]["native"]} for m in med}
    spread = {m: {s: [min(r["total"] for r in rs), max(r["total"] for r in rs)] for s, rs in sides.items()}
              for m, sides in runs.items()}
    print(f"\nTensorlake SQLite benchmark ({args.label}), median of {args.rounds} rounds, seconds")
    print(f"{'mode':<9}{'native':>10}{'sandbox':>10}{'ratio':>8}   native min-max / sandbox min-max")
    for m in med:
        n, s = med[m]["native"]["total"], med[m]["sandbox"]["total"]
        print(f"{m:<9}{n:>10.2f}{s:>10.2f}{s / n:>8.2f}   {spread[m]['native']} / {spread[m]['sandbox']}")
    ops = [op for op in next(iter(ratios.values())) if op != "total"]
    print("\nper operation, sandbox / native")
    print(f"{'operation':<16}" + "".join(f"{m:>10}" for m in med))
    for op in ops:
        print(f"{op:<16}" + "".join(f"{ratios[m][op]:>10.2f}" for m in med))
    path = write(f"sqlite_tl-{args.label}", {"params": vars(args), "median_s": med, "ratio": ratios,
                                            "total_spread_s": spread, "runs": runs})
    png = plot({m: {op: ratios[m][op] for op in ops} for m in ratios}, args.label)
    print(f"\nresults: {path}" + (f", plot: {png}" if png else ""))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="default,fsync,large")
    ap.add_argument("--label", default="pool")
    asyncio.run(main(ap.parse_args()))
