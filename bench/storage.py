"""Filesystem speed inside a sandbox vs natively on this host, side by side.

The same workload (bench/fs_workload.py: SQLite WAL and fsync modes, many small files,
one big file) runs natively in a directory on the host's own disk and inside a
sandbox (its root is a btrfs snapshot in the loop-mounted pool, with a quota),
alternating, R rounds each. Same Python and SQLite versions on both sides (Debian 12).

    .venv/bin/python bench/storage.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402

from cellbox.config import load  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402

WORKLOAD = Path(__file__).with_name("fs_workload.py")


def native(tmp: Path) -> dict:
    out = subprocess.run(["/usr/bin/python3", str(WORKLOAD), str(tmp / "native")], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


async def in_sandbox(client: httpx.AsyncClient, ip: str) -> dict:
    body = {"command": "python3", "args": ["/root/fs_workload.py", "/tmp/bench"], "timeout": 600}
    lines = []
    async with client.stream("POST", f"http://{ip}:9501/api/v1/processes/run", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                ev = json.loads(line[5:])
                if ev.get("stream") == "stdout":
                    lines.append(ev["line"])
                if "exit_code" in ev and ev["exit_code"] != 0:
                    raise RuntimeError(f"workload failed in the sandbox: {ev}")
    return json.loads(lines[-1])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    settings = dataclasses.replace(load(), warm_pool_size=0)
    store = Store(settings.db_path)
    mgr = SandboxManager(settings, store)
    await mgr.start()
    runs: dict[str, list[dict]] = {"native (host ext4)": [], "sandbox (btrfs pool)": []}
    try:
        rec = await mgr.create(CreateSpec(cpus=2.0, memory_mb=4096, disk_mb=8192))
        async with httpx.AsyncClient(timeout=700) as client:
            r = await client.put(f"http://{rec.ip}:9501/api/v1/files", params={"path": "/root/fs_workload.py"},
                                 content=WORKLOAD.read_bytes())
            r.raise_for_status()
            with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
                for i in range(args.rounds):
                    order = [0, 1] if i % 2 == 0 else [1, 0]
                    for k in order:
                        if k == 0:
                            runs["native (host ext4)"].append(await asyncio.to_thread(native, Path(tmp)))
                        else:
                            runs["sandbox (btrfs pool)"].append(await in_sandbox(client, rec.ip or ""))
                    print(f"  round {i + 1}/{args.rounds} done", file=sys.stderr)
        await mgr.destroy(rec.id)
    finally:
        await mgr.stop()
        store.close()

    phases = list(runs["native (host ext4)"][0])
    med = {v: {p: statistics.median(r[p] for r in rs) for p in phases} for v, rs in runs.items()}
    nat, sbx = med["native (host ext4)"], med["sandbox (btrfs pool)"]
    print(f"filesystem workload, median of {args.rounds} rounds, seconds")
    print(f"{'phase':<14}{'native':>10}{'sandbox':>10}{'ratio':>8}")
    for p in phases:
        print(f"{p:<14}{nat[p]:>10.3f}{sbx[p]:>10.3f}{sbx[p] / nat[p]:>8.2f}")
    path = write("storage", {"rounds": args.rounds, "runs": runs, "median_s": med,
                             "ratio": {p: sbx[p] / nat[p] for p in phases}})
    print(f"results: {path}")


if __name__ == "__main__":
    asyncio.run(main())
