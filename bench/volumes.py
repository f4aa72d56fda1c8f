"""Volume operations with the real manager: create, snapshot and fork of a volume
holding 0 / 64 / 256 MiB (a version and a fork must not cost more as it grows: btrfs
snapshots), and attach / detach on a running sandbox (the host-side idmapped mount +
the helper process that enters the sandbox's mount namespace).

    .venv/bin/python bench/volumes.py [-n 10]

Needs root and the pool (scripts/setup.sh). Everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from _common import summarize, table, write  # noqa: E402

from cellbox.config import load  # noqa: E402
from cellbox.manager import volume_mounts as vm  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402
from cellbox.storage import volumes as disk  # noqa: E402


async def timed(samples: dict[str, list[float]], key: str, coro) -> object:
    t0 = time.perf_counter()
    out = await coro
    samples.setdefault(key, []).append((time.perf_counter() - t0) * 1000)
    return out


async def sized_ops(m: SandboxManager, n: int, samples: dict[str, list[float]], made: list[str]) -> None:
    for size in (0, 64, 256):
        vol = await m.volumes.create("default", f"bench-{secrets.token_hex(3)}", 1024)
        made.append(vol.id)
        if size:  # fill it from the host (a bench, not a tenant's tree)
            subprocess.run(["dd", "if=/dev/urandom", f"of={disk.head(m.settings.pool, vol.id)}/fill", "bs=1M",
                            f"count={size}", "conv=fsync", "status=none"], check=True)
        for _ in range(n):
            await timed(samples, f"snapshot {size} MiB", m.volumes.snapshot("default", vol.id))
            fork = await timed(samples, f"fork {size} MiB",
                               m.volumes.fork("default", vol.id, f"bf-{secrets.token_hex(4)}", None, None))
            made.append(fork.id)  # type: ignore[attr-defined]


async def mount_ops(m: SandboxManager, n: int, samples: dict[str, list[float]], made: list[str]) -> None:
    vol = await m.volumes.create("default", f"bench-{secrets.token_hex(3)}", 256)
    made.append(vol.id)
    rec = await m.create(CreateSpec())
    try:
        for _ in range(n):
            rec = await timed(samples, "attach (rw)", m.volumes.attach(rec, vm.MountSpec(vol.name, "/data")))
            rec = await timed(samples, "detach", m.volumes.detach(rec, "/data"))
    finally:
        await m.destroy(rec.id)


async def main(n: int) -> None:
    settings = load()
    store = Store(settings.db_path)
    m = SandboxManager(dataclasses.replace(settings, warm_pool_size=0), store)
    await m.start()
    samples: dict[str, list[float]] = {}
    made: list[str] = []
    try:
        for _ in range(n):
            vol = await timed(samples, "create", m.volumes.create("default", f"bc-{secrets.token_hex(4)}", 64))
            made.append(vol.id)  # type: ignore[attr-defined]
        await sized_ops(m, n, samples, made)
        await mount_ops(m, n, samples, made)
    finally:
        for vid in reversed(made):
            await m.volumes.delete("default", vid)
        await m.stop()
        store.close()
    rows = {k: summarize(v) for k, v in samples.items()}
    print(table(f"volume operations, ms (n={n} each)", rows))
    print("wrote", write("volumes", {"n": n, "results": rows}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    asyncio.run(main(ap.parse_args().n))
