"""A pool claim (a warm sandbox handed out) against a cold create, through the real API.

Starts its own ``cellbox server`` (no default warm pool, so a plain create is cold),
makes a pool with ``--warm`` ready sandboxes, then alternates: wait until the pool has
a ready sandbox, time ``POST sandbox-pools/{id}/sandboxes`` (client round trip, the
sandbox running when it answers), delete it; time a cold ``POST /sandboxes``, delete
it. Prints p50/p95 and writes bench/results/pools-*.json.

    .venv/bin/python bench/pools.py [-n 10] [--warm 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summarize, table, write  # noqa: E402

from cellbox.credentials import find_api_key  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    api, proxy = _port(), _port()
    exe = Path(sys.executable).parent / "cellbox"
    proc = subprocess.Popen([str(exe), "server", "--host", "127.0.0.1", "--api-port", str(api), "--proxy-port",
                             str(proxy)], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "CELLBOX_WARM_POOL": "0"})
    url = f"http://127.0.0.1:{api}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/health", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--warm", type=int, default=2)
    args = ap.parse_args()
    log = Path(tempfile.gettempdir()) / f"bench-pools-{os.getpid()}.log"
    proc, url = _server(log)
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {find_api_key()}"}, timeout=300)
    pool = http.post("/sandbox-pools", json={"image": "cellbox/debian", "resources": {"memory_mb": 1024},
                                             "warm_containers": args.warm}).json()["pool_id"]
    claim_ms: list[float] = []
    cold_ms: list[float] = []
    try:
        for _ in range(args.n):
            while not any(c["state"] == "Idle" for c in http.get(f"/sandbox-pools/{pool}").json()["containers"]):
                time.sleep(0.05)
            t0 = time.perf_counter()
            sid = http.post(f"/sandbox-pools/{pool}/sandboxes").json()["sandbox_id"]
            claim_ms.append((time.perf_counter() - t0) * 1000)
            http.delete(f"/sandboxes/{sid}")
            t0 = time.perf_counter()
            sid = http.post("/sandboxes", json={"resources": {"memory_mb": 1024}}).json()["sandbox_id"]
            cold_ms.append((time.perf_counter() - t0) * 1000)
            http.delete(f"/sandboxes/{sid}")
    finally:
        http.delete(f"/sandbox-pools/{pool}")
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    rows = {"pool claim (warm)": summarize(claim_ms), "create (cold)": summarize(cold_ms)}
    print(table(f"pool claim vs cold create, ms (n={args.n})", rows))
    print(write("pools", {"results": {k: {**v, "samples_ms": s} for (k, v), s in
                                      zip(rows.items(), (claim_ms, cold_ms))}}))


if __name__ == "__main__":
    main()
