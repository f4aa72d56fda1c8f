"""Where a CRIU dump's time goes: two CRIU builds x two image targets, side by side.

One sandbox holding ``--mb`` MiB of touched memory is dumped with ``runc checkpoint
--leave-running`` (it keeps running) by the stock build (``--criu-before``) and the
new one (``--criu-after``: kernel cache on a tmpfs, millisecond freeze poll), into
tmpfs (``/dev/shm``) and into the data dir's disk, interleaved per round. From each
``dump.log``: when the freeze starts (CRIU's start-up and kernel probing before it),
how long the freeze takes, and how long the pages take to write.

    .venv/bin/python bench/criu_dump.py [--rounds 3] [--mb 256]
        [--criu-before /usr/local/sbin/criu] [--criu-after PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402
from state import hold_memory  # noqa: E402

from cellbox import ids  # noqa: E402
from cellbox.config import load  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402
from cellbox.runtime import checkpoint  # noqa: E402


def phases(log: Path) -> dict[str, float]:
    """Milliseconds from CRIU's log: start-up, freeze, pages, total."""
    text = log.read_text(errors="replace")

    def at(pattern: str) -> float:
        m = re.search(r"\((\d+\.\d+)\)[^\n]*" + pattern, text)
        return float(m[1]) * 1000 if m else float("nan")

    start, frozen = at("freezing cgroup"), at("freezing processes")
    pages, end = at("Dumping pages"), at("Writing stats")
    return {"start-up": start, "freeze": frozen - start, "pages..end": end - pages, "criu total": end}


async def main(args: argparse.Namespace) -> None:
    settings = dataclasses.replace(load(), warm_pool_size=0)
    store = Store(settings.db_path)
    mgr = SandboxManager(settings, store)
    await mgr.start()
    rows: dict[str, dict[str, list[float]]] = {}
    loads = [os.getloadavg()[0]]
    targets = {"tmpfs": Path("/dev/shm/cellbox-clone/bench-criu-dump"),
               "disk": settings.data_dir / "tmp" / "bench-criu-dump"}
    builds = {"before": args.criu_before, "after": args.criu_after}
    try:
        rec = await mgr.create(CreateSpec(name="bench-criu-dump", memory_mb=args.mb + 512, cpus=2.0))
        try:
            await hold_memory(rec.ip or "", args.mb)
            cid = ids.container(rec.id)
            for i in range(args.rounds):
                for build in (builds if i % 2 == 0 else dict(reversed(builds.items()))):
                    os.environ["CELLBOX_CRIU"] = builds[build]
                    for target, where in targets.items():
                        shutil.rmtree(where, ignore_errors=True)
                        t0 = time.perf_counter()
                        await checkpoint.checkpoint(mgr.runc, cid, where, leave_running=True)
                        side = f"{build} -> {target}"
                        got = {"runc checkpoint": (time.perf_counter() - t0) * 1000, **phases(where / "work" / "dump.log")}
                        for k, v in got.items():
                            rows.setdefault(k, {}).setdefault(side, []).append(v)
                        shutil.rmtree(where, ignore_errors=True)
                loads.append(os.getloadavg()[0])
                print(f"  round {i + 1}/{args.rounds} (load {loads[-1]:.1f})", file=sys.stderr, flush=True)
        finally:
            os.environ.pop("CELLBOX_CRIU", None)
            await mgr.destroy(rec.id)
    finally:
        await mgr.stop()
        store.close()
    sides = [f"{b} -> {t}" for b in builds for t in targets]
    print(f"\n{args.mb} MiB dump, median ms [min-max] over {args.rounds} rounds; load {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'step':<18}" + "".join(f"{s:>22}" for s in sides))
    for step, per in rows.items():
        cells = []
        for s in sides:
            v = [x for x in per.get(s, []) if x == x]
            cells.append(f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]" if v else "-")
        print(f"{step:<18}" + "".join(f"{c:>22}" for c in cells))
    path = write("criu_dump", {"params": vars(args), "load_average": loads, "samples_ms": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--criu-before", default="/usr/local/sbin/criu")
    ap.add_argument("--criu-after", default="criu")
    asyncio.run(main(ap.parse_args()))
