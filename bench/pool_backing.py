"""What makes fsync slow in the storage pool: btrfs, or the loop file under it?

The pool is btrfs in a loop-mounted sparse file (``storage/pool.py``), and
``bench/storage.py`` measured SQLite and fsync-heavy work 2-3x slower there than on
the host's ext4. This benchmark runs the same small fsync-bound workloads on:

* the host's own filesystem (the directory holding the scratch images),
* btrfs on a sparse loop file (as the pool is made today),
* btrfs / XFS (reflink, project quotas) / ext4 on a *dense* loop device with direct I/O:
  the stand-in for ``CELLBOX_POOL_DEVICE`` (a partition the admin gives us), since this
  host has no spare disk; a real partition also skips the host filesystem under it,
* XFS with reflink on a sparse loop file (project quotas would enforce ``disk_mb``, but
  this kernel is built without ``CONFIG_XFS_QUOTA``: mounting with ``prjquota`` fails),
* overlayfs with its upper layer on the host's filesystem,

side by side in one run, so the loop layer and the filesystem can be told apart.
Scratch images live in a temporary directory under ``/var/tmp`` (the host's disk) and
are unmounted and removed at the end, also on failure.

    .venv/bin/python bench/pool_backing.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402

from cellbox.storage import btrfs  # noqa: E402

IMAGE_GB = 4


def sqlite_commits(d: Path) -> float:
    """300 single-row transactions, rollback journal, synchronous=FULL."""
    path = d / "t.db"
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.execute("pragma journal_mode=delete")
    db.execute("pragma synchronous=full")
    db.execute("create table t(x)")
    t0 = time.perf_counter()
    for i in range(300):
        db.execute("insert into t values(?)", (i,))
        db.commit()
    db.close()
    return time.perf_counter() - t0


def small_fsyncs(d: Path) -> float:
    """500 appends of 4 KiB, each followed by fsync."""
    fd = os.open(d / "f.bin", os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    try:
        t0 = time.perf_counter()
        for _ in range(500):
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def big_write(d: Path) -> float:
    """256 MiB written, then one fsync."""
    t0 = time.perf_counter()
    with open(d / "big.bin", "wb") as f:
        for _ in range(256):
            f.write(b"y" * (1 << 20))
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t0


WORKLOADS: dict[str, Callable[[Path], float]] = {
    "sqlite 300 commits": sqlite_commits,
    "500 x 4 KiB write+fsync": small_fsyncs,
    "256 MiB write+fsync": big_write,
}


@contextmanager
def backing_file(scratch: Path, name: str, dense: bool) -> Iterator[Path]:
    """A 4 GiB file to put a filesystem on: sparse (as ``pool.img`` is made), or dense:
    every block written once, so writes through it change no metadata of the host's
    filesystem -- the nearest this host has to a partition (it has no spare disk)."""
    image = scratch / f"{name}.img"
    if dense:
        subprocess.run(["dd", "if=/dev/zero", f"of={image}", "bs=16M", f"count={IMAGE_GB * 64}",
                        "oflag=direct", "status=none"], check=True)
    else:
        subprocess.run(["truncate", "-s", f"{IMAGE_GB}G", str(image)], check=True)
    try:
        yield image
    finally:
        image.unlink(missing_ok=True)


@contextmanager
def loop_fs(scratch: Path, name: str, mkfs: list[str], dense: bool = False, opts: str = "noatime") -> Iterator[Path]:
    """``mkfs`` on a loop device over a backing file, mounted. Dense backings are
    attached with ``--direct-io=on`` (no second page cache, as a block device) and
    made without discard (a discard would punch the written blocks out again)."""
    mnt = scratch / name
    with backing_file(scratch, name, dense) as image:
        dio = "on" if dense else "off"
        dev = subprocess.run(["losetup", "--find", "--show", f"--direct-io={dio}", str(image)],
                             check=True, capture_output=True, text=True).stdout.strip()
        try:
            subprocess.run([*mkfs, dev], check=True, capture_output=True)
            mnt.mkdir()
            subprocess.run(["mount", "-o", opts, dev, str(mnt)], check=True)
            try:
                yield mnt
            finally:
                subprocess.run(["umount", str(mnt)], check=False)
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)


@contextmanager
def overlay(scratch: Path) -> Iterator[Path]:
    """overlayfs whose upper (writable) layer is a directory on the host's filesystem."""
    lower, upper, work, merged = (scratch / f"ovl-{n}" for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=False)


BTRFS = ["mkfs.btrfs", "-q", "-f", "--nodiscard"]
XFS = ["mkfs.xfs", "-q", "-f", "-K", "-m", "reflink=1"]
EXT4 = ["mkfs.ext4", "-q", "-F", "-E", "nodiscard"]


def candidates(stack: ExitStack, scratch: Path) -> dict[str, Path]:
    """Every backing these benchmarks compare, made and mounted under ``scratch``
    (undone by ``stack``); ``bench/fsync_trace.py`` counts I/O on the same set."""
    native = scratch / "native"
    native.mkdir()
    fs = lambda *a, **k: stack.enter_context(loop_fs(scratch, *a, **k))  # noqa: E731
    variants = {
        "host filesystem (native)": native,
        "btrfs, sparse loop file (old format)": fs("btrfs-sparse", BTRFS, opts="noatime,nodiscard"),
        # The pool as `cellbox setup` makes it now (storage/btrfs.py MKFS, mounted noatime).
        "btrfs, sparse loop file (pool format)": fs("btrfs-pool", [*btrfs.MKFS, "-f", "--nodiscard"]),
        "btrfs, dense loop dio (POOL_DEVICE)": fs("btrfs-dense", BTRFS, dense=True, opts="noatime,nodiscard"),
        "ext4, dense loop dio": fs("ext4-dense", EXT4, dense=True),
        "overlayfs upper on host fs": stack.enter_context(overlay(scratch)),
    }
    if shutil.which("mkfs.xfs"):  # xfsprogs: scripts/setup.sh --test
        variants["xfs reflink, sparse loop file"] = fs("xfs-sparse", XFS)
        variants["xfs reflink, dense loop dio"] = fs("xfs-dense", XFS, dense=True)
    return variants


def main(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="cb-pool-backing-", dir="/var/tmp"))
    results: dict[str, dict[str, list[float]]] = {}
    try:
        with ExitStack() as stack:
            variants = candidates(stack, scratch)
            for rnd in range(args.rounds):
                for name, d in variants.items():
                    for wl, fn in WORKLOADS.items():
                        results.setdefault(name, {}).setdefault(wl, []).append(fn(d))
                print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, dict[str, list[float]]]) -> None:
    nat = {wl: statistics.median(v) for wl, v in results["host filesystem (native)"].items()}
    print(f"\nmedian seconds over {args.rounds} rounds (lower is better), [min-max], ÷ native")
    print(f"{'variant':<38}" + "".join(f"{wl:>34}" for wl in WORKLOADS))
    table = {}
    for name, per in results.items():
        table[name] = {wl: statistics.median(v) for wl, v in per.items()}
        cells = [f"{table[name][wl]:.3f} [{min(per[wl]):.2f}-{max(per[wl]):.2f}] {table[name][wl] / nat[wl]:.2f}x"
                 for wl in WORKLOADS]
        print(f"{name:<38}" + "".join(f"{c:>34}" for c in cells))
    ratio = {n: {wl: t[wl] / nat[wl] for wl in t} for n, t in table.items()}
    path = write("pool_backing", {"params": vars(args), "median_s": table, "ratio": ratio, "samples_s": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args())
