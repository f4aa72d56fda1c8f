"""Where a cold create's time goes, part by part (issue 15's profile of the cold path).

The manager in-process with no warm pool; each part of the assembler's table
(address, rootfs, netns, egress, bundle, volumes, container) is wrapped with a timer,
and within the container part ``runc run`` and the agent's readiness (port, then the
authenticated health answer); the destroy after each create is timed too. Run it on
an instance of its own on a shared host (``source bench/instance.sh NAME``).

    .venv/bin/python bench/cold_parts.py [-n 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402

from cellbox.config import load  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402

TIMES: dict[str, list[float]] = {}


def _timed(name: str, fn: Any) -> Any:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            TIMES.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
    return wrapper


async def main(n: int) -> None:
    settings = replace(load(), warm_pool_size=0)
    store = Store(settings.db_path)
    manager = SandboxManager(settings, store)
    await manager.start()
    asm = manager.assembler
    asm.parts = tuple(replace(p, make=_timed(f"part {p.name}", p.make)) for p in asm.parts)
    asm.runtime.runc.run_detached = _timed("  runc run", asm.runtime.runc.run_detached)  # type: ignore[method-assign]
    asm.agent.wait_ready = _timed("  agent ready (port + health)", asm.agent.wait_ready)  # type: ignore[method-assign]
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            rec = await manager.create(CreateSpec(cpus=1.0, memory_mb=1024), warm=False)
            TIMES.setdefault("create (total)", []).append((time.perf_counter() - t0) * 1000)
            await _timed("destroy", manager.destroy)(rec.id, rec.namespace)
    finally:
        await manager.stop()
        store.close()
    print(f"cold create, part by part, ms (n={n}, load {os.getloadavg()[0]:.1f})")
    for name, v in TIMES.items():
        print(f"  {name:32s} p50 {statistics.median(v):7.1f}  min {min(v):7.1f}  max {max(v):7.1f}")
    print(f"results: {write('cold_parts', {'n': n, 'samples_ms': TIMES})}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    asyncio.run(main(ap.parse_args().n))
