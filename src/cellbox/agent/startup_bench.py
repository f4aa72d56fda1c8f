"""Measure agent start-up: ``python -m cellbox.agent.startup_bench [-n RUNS]``.

Stages a bundle (``bundle.py``) in a temp dir, then repeatedly starts
``python -S -E -m cellbox.agent --host 127.0.0.1 --port P`` from it and
records, from just before ``fork/exec``:

* ``listen``: first moment a TCP connect to the port succeeds;
* ``health``: first moment ``GET /api/v1/health`` returns 200 (the request is
  sent on that first connection, i.e. what a manager polling the agent sees).

Prints min/median/max of each in milliseconds.  Uses only the stdlib.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from .bundle import build


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measure_once(python: str, bundle_dir: str) -> tuple[float, float]:
    port = _free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [python, "-S", "-E", "-m", "cellbox.agent", "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        cwd=bundle_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            sock = socket.socket()
            try:
                sock.connect(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                sock.close()
                if proc.poll() is not None:
                    raise RuntimeError("agent exited during start-up") from None
                time.sleep(0.0002)
        t_listen = time.perf_counter() - t0
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while not data.startswith(b"HTTP/1.1 200") or b"healthy" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"unexpected health answer {data!r}")
            data += chunk
        t_health = time.perf_counter() - t0
        sock.close()
        return t_listen * 1000, t_health * 1000
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(runs: int = 15, python: str | None = None) -> dict[str, list[float]]:
    python = python or sys.executable
    with tempfile.TemporaryDirectory(prefix="cellbox-agent-bundle-") as tmp:
        build(tmp)
        measure_once(python, tmp)  # warm the page cache
        listen, health = [], []
        for _ in range(runs):
            a, b = measure_once(python, tmp)
            listen.append(a)
            health.append(b)
    return {"listen": listen, "health": health}


def main() -> None:
    runs = 15
    if len(sys.argv) == 3 and sys.argv[1] == "-n":
        runs = int(sys.argv[2])
    python = os.environ.get("CELLBOX_BENCH_PYTHON") or sys.executable
    result = run(runs, python)
    print(f"python: {python} -S -E -m cellbox.agent ({runs} runs)")
    for key, values in result.items():
        print(
            f"{key:>7}: min {min(values):6.1f} ms  median {statistics.median(values):6.1f} ms"
            f"  max {max(values):6.1f} ms"
        )


if __name__ == "__main__":
    main()
