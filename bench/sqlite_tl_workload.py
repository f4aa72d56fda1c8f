"""The SQLite workload of Tensorlake's published benchmark, written by us (stdlib only).

Follows ``tensorlakeai/sandbox-sqlite-bench``'s shape: three modes (``default``: WAL,
synchronous=NORMAL, 64 MB cache, 60k rows; ``fsync``: synchronous=FULL, DELETE journal,
25k rows; ``large``: WAL, 8 MB cache, 250k rows) and eleven operations, data from
``random.seed(42)``. It runs unchanged natively and inside a sandbox (Python 3.11 and
SQLite from Debian 12 on both sides) and prints one JSON line: seconds per operation.

    python3 sqlite_tl_workload.py MODE DIR
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

MODES = {
    "default": {"journal": "wal", "sync": "normal", "cache_kb": 64_000, "rows": 60_000},
    "fsync": {"journal": "delete", "sync": "full", "cache_kb": 64_000, "rows": 25_000},
    "large": {"journal": "wal", "sync": "normal", "cache_kb": 8_000, "rows": 250_000},
}
# Per-operation counts: small enough that the fsync mode finishes in seconds, large
# enough that each operation takes well over the timer's noise.
SINGLE_OPS = 500
RANGE_QUERIES = 300
SCANS = 3
THREADS, THREAD_QUERIES = 4, 500
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def connect(path: Path, mode: dict) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute(f"pragma journal_mode={mode['journal']}")
    db.execute(f"pragma synchronous={mode['sync']}")
    db.execute(f"pragma cache_size=-{mode['cache_kb']}")
    return db


def make_rows(n: int, rng: random.Random) -> list[tuple]:
    return [(rng.randrange(1_000_000), " ".join(rng.choices(WORDS, k=6)), rng.random() * 1000, rng.randrange(100))
            for _ in range(n)]


def run(mode_name: str, directory: Path) -> dict[str, float]:
    mode = MODES[mode_name]
    rng = random.Random(42)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"tl-{mode_name}.db"
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = connect(path, mode)
    db.execute("create table items(id integer primary key, k integer, body text, price real, cat integer)")
    db.execute("create index items_k on items(k)")
    db.execute("create table cats(id integer primary key, name text)")
    db.executemany("insert into cats values(?, ?)", [(i, f"cat{i}") for i in range(100)])
    rows = make_rows(mode["rows"], rng)
    out: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t0

    def seq_inserts() -> None:
        for r in rows[:SINGLE_OPS]:  # autocommit: one transaction (and its syncs) each
            db.execute("insert into items(k, body, price, cat) values(?, ?, ?, ?)", r)

    def batch_insert() -> None:
        db.execute("begin")
        db.executemany("insert into items(k, body, price, cat) values(?, ?, ?, ?)", rows[SINGLE_OPS:])
        db.execute("commit")

    def range_queries() -> None:
        for _ in range(RANGE_QUERIES):
            lo = rng.randrange(1_000_000)
            db.execute("select count(*), sum(price) from items where k between ? and ?", (lo, lo + 5000)).fetchone()

    def like_scans() -> None:
        for w in WORDS[:SCANS]:
            db.execute("select count(*) from items where body like ?", (f"%{w} {w}%",)).fetchone()

    def updates() -> None:
        for _ in range(SINGLE_OPS):
            db.execute("update items set price = price + 1 where id = ?", (rng.randrange(1, mode["rows"]),))

    def deletes() -> None:
        for _ in range(SINGLE_OPS):
            db.execute("delete from items where id = ?", (rng.randrange(1, mode["rows"]),))

    def tx_inserts() -> None:
        db.execute("begin")
        for r in make_rows(10_000, rng):
            db.execute("insert into items(k, body, price, cat) values(?, ?, ?, ?)", r)
        db.execute("commit")

    def aggregates() -> None:
        for _ in range(SCANS):
            db.execute("select cat, count(*), avg(price), max(k) from items group by cat").fetchall()

    def join() -> None:
        for _ in range(SCANS):
            db.execute("select c.name, count(*), sum(i.price) from items i join cats c on c.id = i.cat"
                       " group by c.name").fetchall()

    def threaded_reads() -> None:
        def reader(seed: int) -> None:
            conn, r = connect(path, mode), random.Random(seed)
            for _ in range(THREAD_QUERIES):
                lo = r.randrange(1_000_000)
                conn.execute("select count(*) from items where k between ? and ?", (lo, lo + 5000)).fetchone()
            conn.close()
        threads = [threading.Thread(target=reader, args=(42 + i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    timed("seq_inserts", seq_inserts)
    timed("batch_insert", batch_insert)
    timed("count", lambda: db.execute("select count(*) from items").fetchone())
    timed("range_queries", range_queries)
    timed("like_scans", like_scans)
    timed("updates", updates)
    timed("deletes", deletes)
    timed("tx_inserts", tx_inserts)
    timed("aggregates", aggregates)
    timed("join", join)
    timed("threaded_reads", threaded_reads)
    db.close()
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    out["total"] = sum(out.values())
    return out


if __name__ == "__main__":
    os.umask(0o022)
    print(json.dumps(run(sys.argv[1], Path(sys.argv[2]))))
