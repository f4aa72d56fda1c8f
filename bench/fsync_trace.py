"""Why an fsync in the pool costs more than on the host: count the I/O each one causes.

``bench/pool_backing.py`` times the same fsync-bound workloads on each candidate
backing; on this shared machine those times are noisy. What each backing *asks of
the disk* per fsync is not: this benchmark counts, from ``/sys/block/<dev>/stat``,
the write requests, kilobytes written and cache flushes (``REQ_PREFLUSH``) that each
workload causes

* at the loop device (what the filesystem in the pool sends down), and
* at the host's disk (what finally reaches the hardware, including the host
  filesystem's own journal commits for the file backing the loop device),

per operation, next to the time. A flush is the expensive part on a VM disk: it
waits for the host's write cache; so "flushes at the host disk per fsync" is the
figure a backing must bring down to 1 to be as fast as native.

    .venv/bin/python bench/fsync_trace.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402
from pool_backing import candidates, sqlite_commits, small_fsyncs  # noqa: E402

OPS = {"sqlite 300 commits": (sqlite_commits, 300), "500 x 4 KiB write+fsync": (small_fsyncs, 500)}


def block_stat(dev: str) -> dict[str, int]:
    """The kernel's per-device counters (Documentation/block/stat.rst)."""
    f = [int(x) for x in Path(f"/sys/block/{dev}/stat").read_text().split()]
    return {"writes": f[4], "write_kib": f[6] // 2, "flushes": f[15] if len(f) > 15 else 0}


def device_of(mnt: Path) -> str | None:
    """The loop device mounted at ``mnt`` (None for the host fs and overlayfs)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        src, target = line.split()[:2]
        if target == str(mnt) and src.startswith("/dev/loop"):
            return src.removeprefix("/dev/")
    return None


def host_disk(path: Path) -> str:
    """The whole-disk block device under ``path`` (its partition's parent, if any)."""
    st = os.stat(path)
    link = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve()
    return link.parent.name if (link / "partition").exists() else link.name


def measure(d: Path, disk: str, fn, n: int) -> dict[str, float]:
    loop = device_of(d)
    os.sync()
    before = {"host": block_stat(disk), **({"loop": block_stat(loop)} if loop else {})}
    seconds = fn(d)
    after = {"host": block_stat(disk), **({"loop": block_stat(loop)} if loop else {})}
    row = {"ms_per_op": seconds * 1000 / n}
    for where in after:
        for key in ("writes", "write_kib", "flushes"):
            row[f"{where}_{key}_per_op"] = (after[where][key] - before[where][key]) / n
    return row


def main(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="cb-fsync-trace-", dir="/var/tmp"))
    disk = host_disk(scratch)
    samples: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        with ExitStack() as stack:
            variants = candidates(stack, scratch)
            for rnd in range(args.rounds):
                for name, d in variants.items():
                    for wl, (fn, n) in OPS.items():
                        samples.setdefault(name, {}).setdefault(wl, []).append(measure(d, disk, fn, n))
                print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, disk, samples)


def report(args: argparse.Namespace, disk: str, samples: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    cols = ["ms_per_op", "loop_writes_per_op", "loop_flushes_per_op", "host_writes_per_op",
            "host_write_kib_per_op", "host_flushes_per_op"]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for wl in OPS:
        print(f"\n{wl}: per operation, median of {args.rounds} rounds (host disk: {disk}; load {os.getloadavg()[0]:.1f})")
        print(f"{'variant':<38}" + "".join(f"{c.removesuffix('_per_op'):>18}" for c in cols))
        for name, per in samples.items():
            med = {c: statistics.median(s.get(c, float("nan")) for s in per[wl]) for c in cols}
            table.setdefault(name, {})[wl] = med
            print(f"{name:<38}" + "".join(f"{med[c]:>18.2f}" for c in cols))
    path = write("fsync_trace", {"params": vars(args), "host_disk": disk, "median_per_op": table,
                                 "load": os.getloadavg(), "at": time.time()})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args())
