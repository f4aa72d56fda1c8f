"""A filesystem-heavy workload, run the same way natively and inside a sandbox.

Standard library only (it runs with the sandbox image's own python3). Phases:
  sqlite_wal     SQLite WAL/NORMAL: 200 transactions x 250 inserts, indexed updates,
                 range queries, deletes (the sandbox-sqlite-bench "default" shape)
  sqlite_fsync   SQLite DELETE journal, synchronous=FULL: 400 one-row transactions
  small_files    5,000 files of 4 KiB in 50 directories: create, stat, read, delete
  big_file       256 MiB sequential write + fsync, then read back
Prints one JSON object: seconds per phase and the total.

    python3 fs_workload.py DIR
"""

import json
import os
import random
import shutil
import sqlite3
import sys
import time


def sqlite_wal(d):
    db = sqlite3.connect(os.path.join(d, "wal.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value REAL, data TEXT)")
    db.execute("CREATE INDEX t_name ON t(name)")
    db.execute("CREATE INDEX t_value ON t(value)")
    rnd = random.Random(42)
    for b in range(200):
        db.executemany("INSERT INTO t (name, value, data) VALUES (?,?,?)",
                       [(f"item_{b}_{i}", rnd.random() * 1000, "x" * 100) for i in range(250)])
        db.commit()
    for i in range(2000):
        db.execute("UPDATE t SET value=? WHERE name=?", (rnd.random(), f"item_{i % 200}_{i % 250}"))
    db.commit()
    for _ in range(500):
        x = rnd.random() * 900
        db.execute("SELECT * FROM t WHERE value BETWEEN ? AND ? LIMIT 100", (x, x + 100)).fetchall()
    db.execute("DELETE FROM t WHERE id % 7 = 0")
    db.commit()
    db.close()


def sqlite_fsync(d):
    db = sqlite3.connect(os.path.join(d, "full.db"))
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    for _ in range(400):
        db.execute("INSERT INTO t (v) VALUES (?)", ("y" * 64,))
        db.commit()
    db.close()


def small_files(d):
    root = os.path.join(d, "small")
    data = os.urandom(4096)
    paths = []
    for i in range(50):
        sub = os.path.join(root, f"d{i}")
        os.makedirs(sub)
        for j in range(100):
            p = os.path.join(sub, f"f{j}")
            with open(p, "wb") as f:
                f.write(data)
            paths.append(p)
    for p in paths:
        os.stat(p)
    for p in paths:
        with open(p, "rb") as f:
            f.read()
    shutil.rmtree(root)


def big_file(d):
    p = os.path.join(d, "big")
    chunk = os.urandom(1 << 20)
    with open(p, "wb") as f:
        for _ in range(256):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    with open(p, "rb") as f:
        while f.read(1 << 20):
            pass
    os.unlink(p)


def main():
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    out = {}
    for phase in (sqlite_wal, sqlite_fsync, small_files, big_file):
        t0 = time.perf_counter()
        phase(d)
        out[phase.__name__] = time.perf_counter() - t0
    out["total"] = sum(out.values())
    for name in os.listdir(d):
        p = os.path.join(d, name)
        shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
