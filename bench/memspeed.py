"""Memory state at memory speed (issue 15 item 3): before and after, side by side.

Each round runs every operation once per side, alternating which side goes first,
on the same sandboxes (one holding ``--mb`` MiB of touched memory, one holding
``--big-mb`` for the snapshot restore):

    before   the stock CRIU build (``--criu-before``: no kernel cache, 100 ms freeze
             poll; once setup.sh has rebuilt /usr/local/sbin/criu, point this at a
             saved copy of the old binary) and eager restores (``CELLBOX_LAZY_RESTORE=0``)
    criu     the new CRIU build (``--criu-after``), eager restores
    after    the new CRIU build and lazy restores (the default)

Operations: suspend, resume, memory snapshot, restore of a memory snapshot (to the
agent's first answer), clone x1, clone x10; the lazy tails are let finish (untimed)
before the next operation. Two references from this host: touching ``--mb`` MiB of
fresh memory, and copying it into already-touched memory (what a dump or an eager
restore has to pay at least). Prints median [min-max] per side; writes JSON.

    .venv/bin/python bench/memspeed.py [--rounds 3] [--mb 256] [--big-mb 1024]
        [--criu-before /usr/local/sbin/criu] [--criu-after PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import mmap
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402
from state import hold_memory  # noqa: E402

from cellbox.config import load  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.snapshot_store import SnapshotType  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402

SIDES = ("before", "criu", "after")


def fresh_touch_ms(mb: int) -> float:
    """Touch ``mb`` MiB of new anonymous memory, one write per page."""
    m = mmap.mmap(-1, mb << 20)
    t0 = time.perf_counter()
    for i in range(0, mb << 20, 4096):
        m[i] = 1
    dt = (time.perf_counter() - t0) * 1000
    m.close()
    return dt


def copy_prefaulted_ms(mb: int) -> float:
    src, dst = bytearray(mb << 20), bytearray(mb << 20)
    dst[:] = src  # fault both in first
    t0 = time.perf_counter()
    dst[:] = src
    return (time.perf_counter() - t0) * 1000


def side_env(side: str, args: argparse.Namespace) -> None:
    os.environ["CELLBOX_CRIU"] = args.criu_before if side == "before" else args.criu_after
    os.environ["CELLBOX_LAZY_RESTORE"] = "1" if side == "after" else "0"


async def ms(coro: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = await coro
    return (time.perf_counter() - t0) * 1000, out


async def mem_running(mgr: SandboxManager, sandbox_id: str) -> None:
    """After a failed operation: the sandbox running again (resumed if suspended)."""
    await mgr.memory.settle()
    if mgr.memory.get(sandbox_id).status.value == "suspended":
        await mgr.memory.resume(sandbox_id)
        await mgr.memory.settle()


async def one_side(mgr: SandboxManager, small: str, big: str, args: argparse.Namespace,
                   add: Any) -> None:
    mem = mgr.memory
    add(f"suspend @ {args.mb} MiB", (await ms(mem.suspend(small)))[0])
    add(f"resume @ {args.mb} MiB", (await ms(mem.resume(small)))[0])
    await mem.settle()
    t, snap = await ms(mem.snapshot(small, snapshot_type=SnapshotType.MEMORY))
    add(f"snapshot memory @ {args.mb} MiB", t)
    t, copy = await ms(mem.restore(snap.id))
    add(f"restore memory snapshot @ {args.mb} MiB", t)
    await mem.settle()
    await mgr.destroy(copy.id)
    await mem.delete_snapshot(snap.id)
    for n in (1, 10):
        t, copies = await ms(mem.clone(small, n))
        bad = [c for c in copies if isinstance(c, Exception)]
        add(f"clone x{n} @ {args.mb} MiB", t if not bad else float("nan"))
        await mem.settle()
        for c in copies:
            if not isinstance(c, Exception):
                await mgr.destroy(c.id)
    if big:
        snap = await mem.snapshot(big, snapshot_type=SnapshotType.MEMORY)
        t, copy = await ms(mem.restore(snap.id))
        add(f"restore memory snapshot @ {args.big_mb} MiB", t)
        await mem.settle()
        await mgr.destroy(copy.id)
        await mem.delete_snapshot(snap.id)


async def main(args: argparse.Namespace) -> None:
    settings = dataclasses.replace(load(), warm_pool_size=0)
    store = Store(settings.db_path)
    mgr = SandboxManager(settings, store)
    await mgr.start()
    rows: dict[str, dict[str, list[float]]] = {}
    refs: dict[str, list[float]] = {}
    loads = [os.getloadavg()[0]]
    made: list[str] = []
    try:
        small = await mgr.create(CreateSpec(name="bench-memspeed", memory_mb=args.mb + 512, cpus=2.0))
        made.append(small.id)
        await hold_memory(small.ip or "", args.mb)
        big_id = ""
        if args.big_mb:
            big = await mgr.create(CreateSpec(name="bench-memspeed-big", memory_mb=args.big_mb + 512, cpus=2.0))
            made.append(big.id)
            await hold_memory(big.ip or "", args.big_mb)
            big_id = big.id
        for i in range(args.rounds):
            refs.setdefault(f"touch {args.mb} MiB of fresh memory", []).append(fresh_touch_ms(args.mb))
            refs.setdefault(f"copy {args.mb} MiB into touched memory", []).append(copy_prefaulted_ms(args.mb))
            order = SIDES if i % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                side_env(side, args)

                def add(op: str, v: float, side: str = side) -> None:
                    rows.setdefault(op, {}).setdefault(side, []).append(v)

                try:
                    await one_side(mgr, small.id, big_id, args, add)
                except Exception as exc:  # a loaded host: keep the other sides' samples
                    print(f"  {side}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                    add("failed operations", 1.0)
                    await mem_running(mgr, small.id)
            loads.append(os.getloadavg()[0])
            print(f"  round {i + 1}/{args.rounds} (load {loads[-1]:.1f})", file=sys.stderr, flush=True)
    finally:
        for var in ("CELLBOX_CRIU", "CELLBOX_LAZY_RESTORE"):
            os.environ.pop(var, None)
        for sid in made:
            await mgr.destroy(sid)
        await mgr.stop()
        store.close()
    report(args, rows, refs, loads)


def report(args: argparse.Namespace, rows: dict[str, dict[str, list[float]]], refs: dict[str, list[float]],
           loads: list[float]) -> None:
    def cell(v: list[float]) -> str:
        ok = [x for x in v if x == x]
        if not ok:
            return "failed"
        return f"{statistics.median(ok):.0f} [{min(ok):.0f}-{max(ok):.0f}]"

    print(f"\nmemory state, median ms [min-max] over {args.rounds} rounds; load average "
          f"{min(loads):.1f}-{max(loads):.1f} (2 cores)")
    print(f"{'operation':<34}" + "".join(f"{s:>20}" for s in SIDES))
    for op, per in rows.items():
        print(f"{op:<34}" + "".join(f"{cell(per.get(s, [])):>20}" for s in SIDES))
    for op, v in refs.items():
        print(f"{'(ref) ' + op:<54}{cell(v):>20}")
    med = {op: {s: statistics.median([x for x in v if x == x] or [float("nan")]) for s, v in per.items()}
           for op, per in rows.items()}
    path = write("memspeed", {"params": vars(args), "load_average": loads, "median_ms": med,
                              "samples_ms": rows, "references_ms": refs})
    print(f"results: {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--big-mb", type=int, default=1024, help="0: skip the big restore")
    ap.add_argument("--criu-before", default="/usr/local/sbin/criu")
    ap.add_argument("--criu-after", default="criu")
    asyncio.run(main(ap.parse_args()))
