"""Tensorlake's SQLite benchmark (our rewrite), sandbox vs native, side by side in one run.

``bench/sqlite_tl_workload.py`` (three modes, eleven operations, ``random.seed(42)``)
runs natively with the host's Python with its DB under the host's ``/tmp`` and inside
a fresh sandbox with its DB under the sandbox's ``/tmp`` (the sandbox's root: a
snapshot in the storage pool), alternating which goes first each round. Prints
sandbox / native per mode and per operation, writes JSON and a PNG.

Each ``--instance LABEL=DATA_DIR`` is a set-up cellbox data dir (e.g. one with the loop
pool, one with ``CELLBOX_POOL_DEVICE``); every round runs native and one fresh sandbox
per instance, rotating the order, so backings compare against the same native runs.

    .venv/bin/python bench/sqlite_tl.py [--rounds 3] [--modes default,fsync,large] \
        [--instance loop=/var/lib/cellbox --instance device=/var/lib/cellbox-dev]
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


async def sandbox_round(data_dir: Path, modes: list[str]) -> dict[str, dict[str, float]]:
    """One sandbox in the instance at ``data_dir``: every mode once, then destroyed."""
    settings = dataclasses.replace(load(), data_dir=data_dir, warm_pool_size=0)
    store = Store(settings.db_path)
    mgr = SandboxManager(settings, store)
    await mgr.start()
    try:
        rec = await mgr.create(CreateSpec(cpus=2.0, memory_mb=4096, disk_mb=8192))
        try:
            async with httpx.AsyncClient(timeout=1000) as client:
                r = await client.put(f"http://{rec.ip}:9501/api/v1/files", params={"path": "/root/sqlite_tl_workload.py"},
                                     content=WORKLOAD.read_bytes())
                r.raise_for_status()
                return {mode: await in_sandbox(client, rec.ip or "", mode) for mode in modes}
        finally:
            await mgr.destroy(rec.id)
    finally:
        await mgr.stop()
        store.close()


async def main(args: argparse.Namespace) -> None:
    modes = args.modes.split(",")
    # Sides: native, then one sandbox per instance (data dir) named on the command line,
    # so two pool backings are compared against the same native runs in one run.
    dirs = {label: Path(d) for label, d in (x.split("=", 1) for x in args.instance)} or {"sandbox": load().data_dir}
    sides = ["native", *dirs]
    runs: dict[str, dict[str, list[dict[str, float]]]] = {m: {s: [] for s in sides} for m in modes}
    for i in range(args.rounds):
        for side in sides[i % len(sides):] + sides[:i % len(sides)]:  # rotate who goes first
            if side == "native":
                res = {m: await asyncio.to_thread(native, m) for m in modes}
            else:
                res = await sandbox_round(dirs[side], modes)
            for m in modes:
                runs[m][side].append(res[m])
        print(f"  round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    med = {m: {s: {op: statistics.median(r[op] for r in rs) for op in rs[0]} for s, rs in sides.items()}
           for m, sides in runs.items()}
    boxes = [s for s in next(iter(med.values())) if s != "native"]
    ratios = {b: {m: {op: med[m][b][op] / med[m]["native"][op] for op in med[m]["native"]} for m in med} for b in boxes}
    spread = {m: {s: [round(min(r["total"] for r in rs), 2), round(max(r["total"] for r in rs), 2)]
                  for s, rs in sides.items()} for m, sides in runs.items()}
    print(f"\nTensorlake SQLite benchmark, median of {args.rounds} rounds, total seconds [min-max], ÷ native")
    print(f"{'mode':<9}{'native':>20}" + "".join(f"{b:>30}" for b in boxes))
    for m in med:
        cells = [f"{med[m][b]['total']:.2f} {spread[m][b]} {ratios[b][m]['total']:.2f}x" for b in boxes]
        print(f"{m:<9}{med[m]['native']['total']:>8.2f} {str(spread[m]['native']):>11}" + "".join(f"{c:>30}" for c in cells))
    ops = [op for op in med[next(iter(med))]["native"] if op != "total"]
    for b in boxes:
        print(f"\nper operation, {b} / native")
        print(f"{'operation':<16}" + "".join(f"{m:>10}" for m in med))
        for op in ops:
            print(f"{op:<16}" + "".join(f"{ratios[b][m][op]:>10.2f}" for m in med))
    path = write("sqlite_tl", {"params": vars(args), "median_s": med, "ratio": ratios,
                              "total_spread_s": spread, "runs": runs})
    pngs = [plot({m: {op: ratios[b][m][op] for op in ops} for m in med}, b) for b in boxes]
    print(f"\nresults: {path}" + "".join(f", plot: {p}" for p in pngs if p))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="default,fsync,large")
    ap.add_argument("--instance", action="append", default=[], metavar="LABEL=DATA_DIR",
                    help="a cellbox data dir to run the sandbox side in (repeat to compare backings)")
    asyncio.run(main(ap.parse_args()))
