"""Suspend, resume, snapshot and clone with the fast freeze (runtime/freezer.py) and without.

One sandbox holding ``--mb`` MiB of touched memory; each round runs every operation
with ``CELLBOX_FAST_FREEZE=1`` and ``=0`` (alternating which goes first), so the two
compare in one run on the same sandbox. Prints median / min-max per operation.

    .venv/bin/python bench/freeze.py [--rounds 5] [--mb 256]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402
from state import hold_memory  # noqa: E402

from cellbox.config import load  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.snapshot_store import SnapshotType  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402


async def ms(coro) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = await coro
    return (time.perf_counter() - t0) * 1000, out


async def main(args: argparse.Namespace) -> None:
    settings = dataclasses.replace(load(), warm_pool_size=0)
    store = Store(settings.db_path)
    mgr = SandboxManager(settings, store)
    await mgr.start()
    mem = mgr.memory
    rows: dict[str, dict[str, list[float]]] = {}
    try:
        rec = await mgr.create(CreateSpec(name="bench-freeze", memory_mb=args.mb + 512, cpus=2.0))
        try:
            await hold_memory(rec.ip or "", args.mb)
            for i in range(args.rounds):
                for fast in (("1", "0") if i % 2 == 0 else ("0", "1")):
                    os.environ["CELLBOX_FAST_FREEZE"] = fast
                    side = "fast freeze" if fast == "1" else "runc pause + CRIU freeze"
                    add = lambda op, v, side=side: rows.setdefault(op, {}).setdefault(side, []).append(v)  # noqa: E731
                    add("suspend", (await ms(mem.suspend(rec.id)))[0])
                    add("resume", (await ms(mem.resume(rec.id)))[0])
                    t, snap = await ms(mem.snapshot(rec.id, snapshot_type=SnapshotType.MEMORY))
                    add("snapshot memory", t)
                    await mem.delete_snapshot(snap.id)
                    t, copies = await ms(mem.clone(rec.id, 1))
                    add("clone x1", t)
                    for c in copies:
                        if not isinstance(c, Exception):
                            await mgr.destroy(c.id)
                print(f"  round {i + 1}/{args.rounds}", file=sys.stderr, flush=True)
        finally:
            os.environ.pop("CELLBOX_FAST_FREEZE", None)
            await mgr.destroy(rec.id)
    finally:
        await mgr.stop()
        store.close()
    print(f"\n{args.mb} MiB touched, median ms [min-max] over {args.rounds} rounds")
    sides = ["runc pause + CRIU freeze", "fast freeze"]
    print(f"{'operation':<18}" + "".join(f"{s:>32}" for s in sides))
    med = {op: {s: statistics.median(v) for s, v in per.items()} for op, per in rows.items()}
    for op, per in rows.items():
        print(f"{op:<18}" + "".join(f"{f'{med[op][s]:.0f} [{min(per[s]):.0f}-{max(per[s]):.0f}]':>32}" for s in sides))
    path = write("freeze", {"params": vars(args), "median_ms": med, "samples_ms": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mb", type=int, default=256)
    asyncio.run(main(ap.parse_args()))
