"""What the agent's authentication costs per request through the proxy.

One sandbox, one proxy, two names for it: ``auth.local`` resolves with the sandbox's
key (the proxy sends a nonce, the agent answers with its HMAC proof, the proxy checks
it: the production path) and ``plain.local`` without (no nonce, no proof: the path
before authentication existed). Rounds of ``GET /api/v1/processes`` alternate
between the two on one keep-alive client, so host noise hits both alike.

    .venv/bin/python bench/agent_auth.py --rounds 10 -n 200
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cellbox.config import load  # noqa: E402
from cellbox.manager import agent_client  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402
from cellbox.proxy import SandboxProxy  # noqa: E402


async def main(rounds: int, n: int) -> None:
    settings = load()
    manager = SandboxManager(dataclasses.replace(settings, warm_pool_size=0), Store(settings.db_path))
    await manager.start()
    rec = await manager.create(CreateSpec())
    try:
        key = agent_client.key_of(rec)
        assert rec.ip and key is not None
        targets = {"auth": (rec.ip, 9501, rec.id, key), "plain": (rec.ip, 9501, rec.id)}

        async def resolver(ref: str, port: int) -> tuple[object, ...]:
            return targets[ref]

        proxy = SandboxProxy(resolver)
        await proxy.start("127.0.0.1", 0)
        samples: dict[str, list[float]] = {"auth": [], "plain": []}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.port}") as client:
            for r in range(rounds):
                for name in ("auth", "plain") if r % 2 == 0 else ("plain", "auth"):
                    for _ in range(n):
                        t0 = time.perf_counter()
                        resp = await client.get("/api/v1/processes", headers={"Host": f"{name}.local"})
                        samples[name].append((time.perf_counter() - t0) * 1000)
                        assert resp.status_code == 200, resp.text
        await proxy.stop()
        for name, values in samples.items():
            values.sort()
            print(f"{name:6s} median {statistics.median(values):.3f} ms  p90 {values[int(len(values) * 0.9)]:.3f} ms"
                  f"  ({len(values)} requests)")
        print(f"added by authentication: {statistics.median(samples['auth']) - statistics.median(samples['plain']):+.3f} ms"
              " (median)")
    finally:
        await manager.destroy(rec.id)
        await manager.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("-n", type=int, default=200)
    a = ap.parse_args()
    asyncio.run(main(a.rounds, a.n))
