"""Cluster store at scale: generated sandbox rows (not sandboxes) in a throwaway
PostgreSQL, then the three queries the control plane and the nodes run most.

    .venv/bin/python bench/cluster_store.py [--rows 5000000] [--samples 1000]

* list-by-project page: the newest 50 of one project (index sandboxes_project_page)
* get-by-id: one sandbox by primary key, scoped to its project
* key by id: the door's read of an API key (primary key), among 100,000 keys
* claim: a node takes its oldest queued command, FOR UPDATE SKIP LOCKED (index
  commands_queue, partial: only queued rows), rolled back so every sample sees the
  same queue

Each query is timed from the client (psycopg, one connection, loopback): p50/p95 in
ms, and its EXPLAIN (ANALYZE, BUFFERS) plan is printed and stored in the JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import summarize, table, write  # noqa: E402

from cellbox.cluster import migrate  # noqa: E402
from tests.cluster.pg import PgServer  # noqa: E402

PROJECTS = 1000
NODES = 50

LIST = ("SELECT * FROM sandboxes WHERE project = %s ORDER BY created_at DESC, id DESC LIMIT 50")
GET = "SELECT * FROM sandboxes WHERE id = %s AND project = %s"
KEY = ("SELECT id, hash, project, role, name, created_at, expires_at, last_used_at, revoked_at "
       "FROM api_keys WHERE id = %s")  # the door's read (cluster/keystore.py), once per key per 0.5 s
KEYS = 100_000
CLAIM = """UPDATE commands SET state = 'claimed', claimed_epoch = 1, claimed_at = now()
    WHERE id = (SELECT c.id FROM commands c
                JOIN nodes n ON n.id = c.node_id AND n.epoch = 1 AND n.lease_until > now() AND n.state <> 'dead'
                WHERE c.node_id = %s AND c.state = 'queued' ORDER BY c.id LIMIT 1 FOR UPDATE OF c SKIP LOCKED)
    RETURNING id"""


def _secondary_indexes(conn: psycopg.Connection) -> list[str]:
    """The DDL of every index but the primary keys of the generated tables: dropped
    while rows are generated and built again after (one sort per index instead of
    millions of B-tree inserts; the same indexes the migration makes)."""
    rows = conn.execute("""SELECT indexname, indexdef FROM pg_indexes
                           WHERE tablename IN ('sandboxes', 'commands') AND indexname NOT LIKE '%_pkey'""").fetchall()
    for name, _ in rows:
        conn.execute(f"DROP INDEX {name}")
    return [ddl for _, ddl in rows]


def generate(conn: psycopg.Connection, rows: int) -> dict[str, float]:
    """Rows made server-side (generate_series), with foreign-key and NOTIFY triggers off
    for the session (``session_replication_role = replica``: the rows are consistent by
    construction) and the secondary indexes built after the data."""
    t0 = time.monotonic()
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("SET session_replication_role = replica")
    indexes = _secondary_indexes(conn)
    conn.execute(f"""INSERT INTO nodes (id, address, capacity_sandboxes, capacity_mem_mb, lease_until)
                     SELECT 'n' || i, '10.0.0.' || i || ':9443', 1000000, 1000000000, now() + interval '1 day'
                     FROM generate_series(1, {NODES}) i""")
    conn.execute(f"""INSERT INTO sandboxes (id, project, node_id, state, desired_state, memory_mb, created_at)
                     SELECT 'sb' || i, 'p' || (i % {PROJECTS}), 'n' || (1 + i % {NODES}),
                            CASE WHEN i % 10 = 0 THEN 'running' ELSE 'terminated' END, 'running', 512,
                            now() - make_interval(secs => i)
                     FROM generate_series(1, {rows}) i""")
    # A command for every 5th sandbox, 5 % of them queued (the outbox's steady state is small; the
    # finished ones are what piles up), spread over the nodes.
    conn.execute(f"""INSERT INTO commands (sandbox_id, node_id, kind, generation, state)
                     SELECT 'sb' || i, 'n' || (1 + (i / 5) % {NODES}), 'create', 1,
                            CASE WHEN (i / 5) % 20 = 0 THEN 'queued' ELSE 'done' END
                     FROM generate_series(1, {rows}, 5) i""")
    conn.execute(f"""INSERT INTO api_keys (id, hash, project, role, created_at)
                     SELECT lpad(to_hex(i), 16, '0'), md5(i::text) || md5(i::text), 'p' || (i % {PROJECTS}),
                            'member', 0
                     FROM generate_series(1, {KEYS}) i""")
    t1 = time.monotonic()
    for ddl in indexes:
        conn.execute(ddl)
    conn.execute("SET session_replication_role = origin")
    conn.execute("VACUUM ANALYZE sandboxes")
    conn.execute("VACUUM ANALYZE commands")
    conn.execute("VACUUM ANALYZE api_keys")
    t2 = time.monotonic()
    return {"rows_s": t1 - t0, "indexes_and_analyze_s": t2 - t1, "total_s": t2 - t0}


def timed(conn: psycopg.Connection, sql: str, params_of, samples: int, rollback: bool = False) -> list[float]:
    out = []
    for i in range(samples):
        params = params_of(i)
        t0 = time.perf_counter()
        if rollback:
            with conn.transaction(force_rollback=True):
                conn.execute(sql, params).fetchall()
        else:
            conn.execute(sql, params).fetchall()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def explain(conn: psycopg.Connection, sql: str, params) -> str:
    with conn.transaction(force_rollback=True):
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params).fetchall()
    return "\n".join(r[0] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    pg = PgServer().start()
    try:
        migrate.upgrade(pg.dsn)
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            gen_s = generate(conn, args.rows)
            cases = {
                "list page (50)": (LIST, lambda i: (f"p{i % PROJECTS}",), False),
                "get by id": (GET, lambda i: (f"sb{1 + (i * 7919) % args.rows}", f"p{(1 + (i * 7919) % args.rows) % PROJECTS}"), False),
                "claim (skip locked)": (CLAIM, lambda i: (f"n{1 + i % NODES}",), True),
                f"key by id ({KEYS:,} keys)": (KEY, lambda i: (f"{1 + (i * 7919) % KEYS:016x}",), False),
            }
            results, plans = {}, {}
            for name, (sql, params_of, rb) in cases.items():
                timed(conn, sql, params_of, 20, rb)  # warm the cache
                results[name] = summarize(timed(conn, sql, params_of, args.samples, rb))
                plans[name] = explain(conn, sql, params_of(0))
    finally:
        pg.stop()
    print(table(f"cluster store, {args.rows:,} sandbox rows, {args.rows // 5:,} commands (ms)", results))
    for name, plan in plans.items():
        print(f"\n-- EXPLAIN {name}\n{plan}")
    load = os.getloadavg()
    path = write("cluster_store", {"rows": args.rows, "generate": gen_s, "results": results, "plans": plans,
                                   "loadavg": load})
    print(f"\ngenerated in {gen_s['total_s']:.0f}s ({gen_s}); load average {load[0]:.1f}; wrote {path}")


if __name__ == "__main__":
    main()
