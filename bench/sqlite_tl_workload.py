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


INSERT = "insert into items(k, body, price, cat) values(?, ?, ?, ?)"


class Workload:
    """One mode's database and its eleven operations, in the benchmark's order."""

    def __init__(self, mode_name: str, directory: Path) -> None:
        self.mode = MODES[mode_name]
        self.rng = random.Random(42)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"tl-{mode_name}.db"
        self._remove()
        self.db = connect(self.path, self.mode)
        self.db.execute("create table items(id integer primary key, k integer, body text, price real, cat integer)")
        self.db.execute("create index items_k on items(k)")
        self.db.execute("create table cats(id integer primary key, name text)")
        self.db.executemany("insert into cats values(?, ?)", [(i, f"cat{i}") for i in range(100)])
        self.rows = make_rows(self.mode["rows"], self.rng)

    def _remove(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def seq_inserts(self) -> None:
        for r in self.rows[:SINGLE_OPS]:  # autocommit: one transaction (and its syncs) each
            self.db.execute(INSERT, r)

    def batch_insert(self) -> None:
        self.db.execute("begin")
        self.db.executemany(INSERT, self.rows[SINGLE_OPS:])
        self.db.execute("commit")

    def count(self) -> None:
        self.db.execute("select count(*) from items").fetchone()

    def range_queries(self) -> None:
        for _ in range(RANGE_QUERIES):
            lo = self.rng.randrange(1_000_000)
            self.db.execute("select count(*), sum(price) from items where k between ? and ?", (lo, lo + 5000)).fetchone()

    def like_scans(self) -> None:
        for w in WORDS[:SCANS]:
            self.db.execute("select count(*) from items where body like ?", (f"%{w} {w}%",)).fetchone()

    def updates(self) -> None:
        for _ in range(SINGLE_OPS):
            self.db.execute("update items set price = price + 1 where id = ?", (self.rng.randrange(1, self.mode["rows"]),))

    def deletes(self) -> None:
        for _ in range(SINGLE_OPS):
            self.db.execute("delete from items where id = ?", (self.rng.randrange(1, self.mode["rows"]),))

    def tx_inserts(self) -> None:
        self.db.execute("begin")
        for r in make_rows(10_000, self.rng):
            self.db.execute(INSERT, r)
        self.db.execute("commit")

    def aggregates(self) -> None:
        for _ in range(SCANS):
            self.db.execute("select cat, count(*), avg(price), max(k) from items group by cat").fetchall()

    def join(self) -> None:
        for _ in range(SCANS):
            self.db.execute("select c.name, count(*), sum(i.price) from items i join cats c on c.id = i.cat"
                            " group by c.name").fetchall()

    def threaded_reads(self) -> None:
        def reader(seed: int) -> None:
            conn, r = connect(self.path, self.mode), random.Random(seed)
            for _ in range(THREAD_QUERIES):
                lo = r.randrange(1_000_000)
                conn.execute("select count(*) from items where k between ? and ?", (lo, lo + 5000)).fetchone()
            conn.close()
        threads = [threading.Thread(target=reader, args=(42 + i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    OPS = ("seq_inserts", "batch_insert", "count", "range_queries", "like_scans", "updates", "deletes",
           "tx_inserts", "aggregates", "join", "threaded_reads")

    def run(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.OPS:
            t0 = time.perf_counter()
            getattr(self, name)()
            out[name] = time.perf_counter() - t0
        self.db.close()
        self._remove()
        out["total"] = sum(out.values())
        return out


def run(mode_name: str, directory: Path) -> dict[str, float]:
    return Workload(mode_name, directory).run()


if __name__ == "__main__":
    os.umask(0o022)
    print(json.dumps(run(sys.argv[1], Path(sys.argv[2]))))
