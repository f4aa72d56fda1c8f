"""The lifecycle API at 100,000 suspended sandboxes: generated store records, real code path.

100,000 real CRIU dumps do not fit this disk (``bench/density.py`` measures one), so
the records are generated: real ``Store`` (SQLite, WAL, its indexes) in a scratch data
dir, with ``--count`` suspended records in the ``default`` project (the worst case for
paging: one project holds them all), ``--running`` running ones owned by a dead
process (the sweep reads them every second but leaves them alone, so nothing on the
host is touched) and ``--final`` terminated ones. A server subprocess serves them with
the real API app (``create_web_app``: the key check, routes, render), the real
``SandboxService`` and the real once-a-second sweep (``Timers``), on uvicorn, like
``cellbox server`` does, but without ``manager.start()`` (no bridge, no pool: no
sandbox is made). The client times, over loopback with the admin key:

* get: ``GET /sandboxes/{id}`` of random records; get by name;
* list: ``GET /sandboxes?limit=100`` (first page), a deep page (cursor in the middle),
  ``status=suspended``, and the default page (1000 records);

``--code DIR`` runs the server on another checkout's ``src`` (e.g. ``/work/main/src``)
so before and after are measured side by side, alternating, in one run.

    .venv/bin/python bench/store_scale.py [--count 100000] [--code /work/main/src] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _common import summarize, table, write  # noqa: E402

DEAD_OWNER = "1:1"  # pid 1's start time is never 1: a process that is gone


def generate(db: Path, count: int, running: int, final: int) -> dict[str, object]:
    """Insert the records straight into the real schema (``Store`` makes it)."""
    from cellbox import ids
    from cellbox.manager.records import SandboxRecord, Status
    from cellbox.manager.store import Store

    store = Store(db)
    t0 = time.monotonic()
    rows, named = [], []
    now = int(time.time() * 1000) - (count + running + final)
    for i in range(count + running + final):
        status = Status.SUSPENDED if i < count else Status.RUNNING if i < count + running else Status.TERMINATED
        rec = SandboxRecord(id=ids.new_id(), namespace="default", image="cellbox/debian:latest", cpus=1.0,
                            memory_mb=1024, disk_mb=4096, status=status, created_at=now + i, owner=DEAD_OWNER,
                            name=f"box-{i}" if i % 10 == 0 else None, timeout_secs=600,
                            extra={"agent_key": os.urandom(16).hex(), "image_digest": "sha256:" + "ab" * 32,
                                   "suspended_at": now + i, "network_policy": {"allow_internet_access": True}})
        if status != Status.TERMINATED:
            rec.ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        else:
            rec.terminated_at, rec.termination_reason = now + i, "user_terminated"
        if rec.name and status == Status.SUSPENDED:
            named.append(rec.name)
        rows.append((rec.id, rec.namespace, rec.name, rec.status.value, rec.ip, rec.created_at, store._doc(rec)))
    store.db.execute("BEGIN")
    store.db.executemany("INSERT INTO sandboxes (id, namespace, name, status, ip, created_at, doc) "
                         "VALUES (?,?,?,?,?,?,?)", rows)
    store.db.execute("COMMIT")
    store.db.execute("ANALYZE")
    store.close()
    ids_ = [r[0] for r in rows[:count]]
    return {"ids": ids_, "names": named, "generate_s": time.monotonic() - t0,
            "db_mb": db.stat().st_size / (1 << 20)}


def store_ops(db: Path, gen: dict, samples: int) -> dict[str, dict]:
    """In-process, no HTTP: what one sweep blocks the event loop for, before (every
    live record parsed, as main did) and after (the running ones), and the store's
    side of get and of a page. Load-independent enough to compare on a busy host."""
    from cellbox.manager.store import Store

    store, rng = Store(db), random.Random(7)

    def clock(fn, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000)
        return out

    mid = store.list_page("default", live_only=True, limit=len(gen["ids"]) // 2)[-1]
    res = {
        "sweep read, before: all live": clock(lambda: store.list(live_only=True), 5),
        "sweep read, after: running": clock(lambda: store.with_status(["running"]), 20),
        "get by id": clock(lambda: store.get(rng.choice(gen["ids"])), samples),
        "page of 100, deep, row value": clock(lambda: store.list_page("default", live_only=True,
                                                                       after=(mid.created_at, mid.id), limit=100),
                                              samples),
        "page of 100, deep, OR form (before)": clock(lambda: store.db.execute(
            "SELECT doc FROM sandboxes WHERE namespace=? AND status NOT IN ('terminated','failed') AND "
            "(created_at > ? OR (created_at = ? AND id > ?)) ORDER BY created_at, id LIMIT 100",
            ("default", mid.created_at, mid.created_at, mid.id)).fetchall(), samples),
    }
    store.close()
    return {k: summarize(v) for k, v in res.items()}


async def serve(data_dir: Path, port: int) -> None:
    """The server side (``--serve``): the real app, service and sweep over the store."""
    import uvicorn

    from cellbox.auth.door import Door
    from cellbox.config import Settings
    from cellbox.manager.lifecycle import SandboxManager
    from cellbox.manager.service import SandboxService
    from cellbox.manager.store import Store
    from cellbox.manager.timeouts import Timers
    from cellbox.web import create_web_app

    settings = Settings(data_dir=data_dir, warm_pool_size=0)
    store = Store(settings.db_path)
    door = Door.open(settings, store.db)
    service = SandboxService(SandboxManager(settings, store), proxy_port=1, door=door)
    timers = Timers(service)
    timers.start()
    config = uvicorn.Config(create_web_app(service, door), host="127.0.0.1", port=port, lifespan="off",
                            log_level="warning", access_log=False)
    await uvicorn.Server(config).serve()
    await timers.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def timed(client: httpx.AsyncClient, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return out


async def probe(api: str, key: str, gen: dict, samples: int) -> dict[str, dict]:
    rng = random.Random(42)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        for _ in range(600):
            try:
                if (await client.get(f"{api}/sandboxes?limit=1")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        mid = (await client.get(f"{api}/sandboxes?limit=1000")).json()  # warm; a cursor in the middle:
        for _ in range(len(gen["ids"]) // 2000):
            mid = (await client.get(f"{api}/sandboxes?limit=1000&cursor={mid['next_cursor']}")).json()
        cursor = mid.get("next_cursor")
        out: dict[str, list[float]] = {"get by id": [], "get by name": []}
        for _ in range(samples):
            out["get by id"] += await timed(client, f"{api}/sandboxes/{rng.choice(gen['ids'])}", 1)
            out["get by name"] += await timed(client, f"{api}/sandboxes/{rng.choice(gen['names'])}", 1)
        out["list limit=100"] = await timed(client, f"{api}/sandboxes?limit=100", samples)
        out["list deep page"] = await timed(client, f"{api}/sandboxes?limit=100&cursor={cursor}", samples)
        out["list status=suspended"] = await timed(client, f"{api}/sandboxes?status=suspended&limit=100", samples)
        out["list default (1000)"] = await timed(client, f"{api}/sandboxes", max(10, samples // 5))
        return {k: summarize(v) for k, v in out.items()}


def run_server(code: Path, data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(code), "CELLBOX_E2B": "0"}
    return subprocess.Popen([sys.executable, __file__, "--serve", str(data_dir), "--port", str(port)], env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd="/")


def main(args: argparse.Namespace) -> None:
    if args.serve:
        asyncio.run(serve(Path(args.serve), args.port))
        return
    codes = {"this": ROOT / "src", **({"other": Path(args.code)} if args.code else {})}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cellbox-store-scale-") as tmp:
        data = Path(tmp) / "data"
        gen = generate(data / "cellbox.db", args.count, args.running, args.final)
        print(f"generated {args.count} suspended + {args.running} running + {args.final} terminated records "
              f"in {gen['generate_s']:.1f} s; database {gen['db_mb']:.0f} MiB", flush=True)
        results["store (in-process)"] = store_ops(data / "cellbox.db", gen, args.samples)
        print(table(f"\nstore, in-process, load {os.getloadavg()[0]:.1f} (ms)", results["store (in-process)"]),
              flush=True)
        for rnd in range(0 if args.store_only else args.rounds):
            for label, code in codes.items():
                port = free_port()
                proc = run_server(code, data, port, Path(tmp) / f"server-{label}.log")
                try:
                    key = ""
                    for _ in range(300):
                        if (data / "admin.key").exists() and (key := (data / "admin.key").read_text().strip()):
                            break
                        time.sleep(0.1)
                    res = asyncio.run(probe(f"http://127.0.0.1:{port}", key, gen, args.samples))
                finally:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                name = f"{label} ({code}) round {rnd + 1}"
                results[name] = res
                print(table(f"\n{name}, load {os.getloadavg()[0]:.1f} (ms)", res), flush=True)
    path = write("store_scale", {"params": {k: v for k, v in vars(args).items() if k != "serve"},
                                 "db_mb": gen["db_mb"], "results": results})
    print(f"results: {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000, help="suspended records")
    ap.add_argument("--running", type=int, default=1000)
    ap.add_argument("--final", type=int, default=10_000, help="terminated records")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--code", help="another checkout's src/ to run the server on, side by side")
    ap.add_argument("--store-only", action="store_true", help="the in-process store figures only")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    main(ap.parse_args())
