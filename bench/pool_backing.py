"""What makes fsync slow in the storage pool: btrfs, or the loop file under it?

The pool is btrfs in a loop-mounted sparse file (``storage/pool.py``), and
``bench/storage.py`` measured SQLite and fsync-heavy work 2-3x slower there than on
the host's ext4. This benchmark runs the same small fsync-bound workloads on:

* the host's own filesystem (the directory holding the scratch images),
* btrfs on a scratch loop file (as the pool is made), and with ``nodatacow``,
* ext4 on a scratch loop file of the same kind,

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
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402

IMAGE_SIZE = "4G"


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
def loop_fs(scratch: Path, name: str, mkfs: list[str]) -> Iterator[Path]:
    image, mnt = scratch / f"{name}.img", scratch / name
    subprocess.run(["truncate", "-s", IMAGE_SIZE, str(image)], check=True)
    subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
    mnt.mkdir()
    # A loop mount sets autoclear: the loop device goes with the unmount.
    subprocess.run(["mount", "-o", "loop,noatime", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def main(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="cb-pool-backing-", dir="/var/tmp"))
    results: dict[str, dict[str, list[float]]] = {}
    try:
        native = scratch / "native"
        native.mkdir()
        with loop_fs(scratch, "btrfs", ["mkfs.btrfs", "-q"]) as btrfs_dir, \
                loop_fs(scratch, "ext4", ["mkfs.ext4", "-q"]) as ext4_dir:
            nocow = btrfs_dir / "nocow"
            nocow.mkdir()
            subprocess.run(["chattr", "+C", str(nocow)], check=True)
            variants = {
                "host filesystem (native)": native,
                "btrfs on a loop file": btrfs_dir,
                "btrfs nodatacow on a loop file": nocow,
                "ext4 on a loop file": ext4_dir,
            }
            for rnd in range(args.rounds):
                for name, d in variants.items():
                    for wl, fn in WORKLOADS.items():
                        results.setdefault(name, {}).setdefault(wl, []).append(fn(d))
                print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nmedian seconds over {args.rounds} rounds (lower is better)")
    print(f"{'variant':<34}" + "".join(f"{wl:>26}" for wl in WORKLOADS))
    table = {}
    for name, per in results.items():
        table[name] = {wl: statistics.median(v) for wl, v in per.items()}
        print(f"{name:<34}" + "".join(f"{table[name][wl]:>26.3f}" for wl in WORKLOADS))
    path = write("pool_backing", {"params": vars(args), "median_s": table, "samples_s": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args())
