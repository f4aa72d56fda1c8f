"""The continuous log collector (issue 14): how soon a printed line is on the host,
how fast a flood is collected, and what idle sandboxes cost the server.

Starts its own ``cellbox server`` twice (no warm pool): with the collector (the
default) and with ``CELLBOX_LOG_COLLECTOR=0``, and in each makes ``--idle`` sandboxes
and measures the server's CPU time over ``--seconds`` while they sit idle. With the
collector it also times ``-n`` single lines from ``Sandbox.run`` returning to the line
being in ``<data>/logs/<id>/current.jsonl`` (polled every 2 ms), and a flood of
``--flood-mb`` MB from the end of the command to its last line being on the host.
Prints a table and writes bench/results/log_collector-*.json.

    .venv/bin/python bench/log_collector.py [-n 30] [--idle 5] [--seconds 20] [--flood-mb 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summarize, table, write  # noqa: E402
from pools import _port  # noqa: E402

from cellbox.config import load  # noqa: E402
from cellbox.sdk import Sandbox  # noqa: E402


def _server(log: Path, collector: bool) -> tuple[subprocess.Popen[bytes], str]:
    api, proxy = _port(), _port()
    exe = Path(sys.executable).parent / "cellbox"
    env = {**os.environ, "CELLBOX_WARM_POOL": "0", "CELLBOX_LOG_COLLECTOR": "1" if collector else "0"}
    proc = subprocess.Popen([str(exe), "server", "--host", "127.0.0.1", "--api-port", str(api), "--proxy-port",
                             str(proxy)], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{api}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/health", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_in(path: Path, needle: str, timeout: float = 120.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with path.open("rb") as f:
                f.seek(max(0, f.seek(0, 2) - 65536))
                if needle.encode() in f.read():
                    return time.perf_counter()
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise SystemExit(f"{needle!r} never reached {path}")


def _measure(collector: bool, args: argparse.Namespace) -> dict[str, object]:
    log = Path(tempfile.gettempdir()) / f"bench-logcollector-{os.getpid()}-{int(collector)}.log"
    proc, url = _server(log, collector)
    sandboxes: list[Sandbox] = []
    out: dict[str, object] = {}
    try:
        sandboxes = [Sandbox.create(memory_mb=256, api_url=url) for _ in range(args.idle)]
        time.sleep(3)  # the collector's scan has found them
        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        time.sleep(args.seconds)
        out["idle_cpu_ms_per_s"] = (_cpu_s(proc.pid) - cpu0) * 1000 / (time.monotonic() - t0)
        if collector:
            sbx, kept = sandboxes[0], load().data_dir / "logs" / sandboxes[0].id / "current.jsonl"
            lat: list[float] = []
            for i in range(args.n):
                sbx.run("echo", [f"bench-marker-{i}-{os.getpid()}"])
                t = time.perf_counter()
                lat.append((_wait_in(kept, f"bench-marker-{i}-{os.getpid()}") - t) * 1000)
            out["latency_ms"] = lat
            size = args.flood_mb * 1_000_000
            sbx.run("sh", ["-c", f"yes 0123456789012345678901234567890123456789012345678901234567890 | "
                                 f"head -c {size}; echo flood-done-{os.getpid()}"], timeout=300)
            t = time.perf_counter()
            out["flood_tail_ms"] = (_wait_in(kept, f"flood-done-{os.getpid()}") - t) * 1000
    finally:
        for s in sandboxes:
            s.terminate()
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--idle", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--flood-mb", type=int, default=20)
    args = ap.parse_args()
    load_before = os.getloadavg()
    on = _measure(True, args)
    off = _measure(False, args)
    lat = on.pop("latency_ms")
    assert isinstance(lat, list)
    print(table(f"print -> on the host, ms (n={args.n})", {"collector": summarize(lat)}))
    print(f"flood of {args.flood_mb} MB: its last line on the host {on['flood_tail_ms']:.0f} ms after the command ended")
    print(f"server CPU with {args.idle} idle sandboxes: collector on {on['idle_cpu_ms_per_s']:.2f} ms/s, "
          f"off {off['idle_cpu_ms_per_s']:.2f} ms/s")
    print(f"load average before/after: {load_before} / {os.getloadavg()}")
    print(write("log_collector", {"results": {"latency": {**summarize(lat), "samples_ms": lat}, "on": on, "off": off,
                                              "args": vars(args), "loadavg": [load_before, os.getloadavg()]}}))


if __name__ == "__main__":
    main()
