"""What authentication adds to a small request, through the API and through the proxy.

Side by side in one run, one process: the lifecycle API app with the door and without
it (``create_app(service, door)`` vs ``door=None``), each served by uvicorn on
loopback, and the sandbox proxy with the authorizing resolver and without it, in front
of one tiny upstream HTTP server (so only the proxy's own work differs). The key check
is the real one: the key's row (SQLite WAL, read at most every ``ROW_TTL``), SHA-256,
constant-time compare; ``authenticate()`` is also timed alone (as served, and the
path before the token cache, and with no cache at all), and the ASGI gate alone
around a no-op app. Requests alternate on/off in rounds, in a random order per
round, so drift (CPU noise from other work on the host) hits both sides alike; the
added latency is reported both as the difference of the p50s and as the median of
the per-round paired differences (on minus off, the same moment), which cancels
most of that noise.

    .venv/bin/python bench/auth.py [-n 3000]
"""

from __future__ import annotations

import argparse
import dataclasses
import asyncio
import random
import statistics
import os
import sqlite3
import sys
import tempfile
import multiprocessing
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summarize, table, write  # noqa: E402

from cellbox.api import create_app  # noqa: E402
from cellbox.auth.bootstrap import ensure_admin_key  # noqa: E402
from cellbox.auth.door import Door  # noqa: E402
from cellbox.auth.guard import ROW_TTL, Authenticator, proxy_resolver  # noqa: E402
from cellbox.config import Settings  # noqa: E402
from cellbox.manager.service import Page  # noqa: E402
from cellbox.proxy import SandboxProxy  # noqa: E402


class ListOnly:
    """The service part a ``GET /sandboxes`` needs: an empty page (no sandbox work timed)."""

    proxy_url = "http://localhost:9443"

    def list(self, namespace: str, **kw: Any) -> Page:
        return Page([])


UPSTREAM_BODY = b'{"healthy": true}'


async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal agent: answers every request with a fixed 200 and closes."""
    try:
        while await reader.readline() not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n%s" % (len(UPSTREAM_BODY), UPSTREAM_BODY))
        await writer.drain()
    finally:
        writer.close()


def serve_in_child(work: Any) -> multiprocessing.Process:
    """The servers in a process of their own: in this one they would share the GIL with
    the client and time each other."""

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(work())
        loop.run_forever()

    child = multiprocessing.get_context("fork").Process(target=run, daemon=True)
    child.start()
    return child


async def _gate_alone(auth: Authenticator, header: bytes, n: int) -> float:
    """µs per request the ASGI gate adds, without HTTP, uvicorn or FastAPI around it."""
    from cellbox.api.auth import AuthGate

    async def nothing(scope: Any, receive: Any, send: Any) -> None:
        return None

    gate = AuthGate(nothing, auth)
    scope = {"type": "http", "method": "GET", "path": "/sandboxes", "headers": [(b"authorization", header)]}
    t0 = time.perf_counter()
    for _ in range(n):
        await gate(dict(scope), None, None)  # type: ignore[arg-type]
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3000, help="requests per side and path")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cellbox-bench-auth-"))
    os.environ["CELLBOX_DATA_DIR"] = str(tmp)
    settings = Settings(data_dir=tmp)
    ensure_admin_key(settings)
    key = (tmp / "admin.key").read_text().strip()
    # "before": the gate as it was before the token cache (row cache, SHA-256 every call).
    names = ("api on", "api before", "api off", "proxy on", "proxy before", "proxy off")
    port_file = tmp / "ports"

    async def start() -> None:
        db = sqlite3.connect(str(settings.db_path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        door = Door.open(settings, db)
        ports: dict[str, int] = {}
        before = dataclasses.replace(door, auth=Authenticator(door.store, remember_tokens=False))
        apps = (("api on", create_app(ListOnly(), door)), ("api before", create_app(ListOnly(), before)),  # type: ignore[arg-type]
                ("api off", create_app(ListOnly(), None)))  # type: ignore[arg-type]
        for label, app in apps:
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
            asyncio.ensure_future(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            ports[label] = server.servers[0].sockets[0].getsockname()[1]
        up = await asyncio.start_server(upstream, "127.0.0.1", 0)
        up_port = up.sockets[0].getsockname()[1]

        async def resolve(ref: str, port: int, principal: Any = None, error: Any = None) -> tuple[str, int, str]:
            if error is not None:
                raise error
            return "127.0.0.1", up_port, ref

        async def plain(ref: str, port: int) -> tuple[str, int, str]:
            return "127.0.0.1", up_port, ref

        on = SandboxProxy(proxy_resolver(resolve, door.auth), authorize=True)
        old = SandboxProxy(proxy_resolver(resolve, before.auth), authorize=True)
        off = SandboxProxy(plain)
        for label, proxy in (("proxy on", on), ("proxy before", old), ("proxy off", off)):
            await proxy.start("127.0.0.1", 0)
            ports[label] = proxy.port
        port_file.write_text(" ".join(str(ports[n]) for n in names))

    child = serve_in_child(start)
    while not port_file.exists() or len(port_file.read_text().split()) < len(names):
        time.sleep(0.05)
    ports = dict(zip(names, map(int, port_file.read_text().split())))
    headers = {"Authorization": f"Bearer {key}"}
    samples: dict[str, list[float]] = {label: [] for label in ports}
    with httpx.Client(headers=headers, timeout=10) as http:
        def once(label: str) -> float:
            if label.startswith("api"):
                url, extra = f"http://127.0.0.1:{ports[label]}/sandboxes?limit=1", {}
            else:
                url, extra = f"http://127.0.0.1:{ports[label]}/api/v1/health", {"Host": "bench1.local"}
            t0 = time.perf_counter()
            resp = http.get(url, headers=extra)
            took = (time.perf_counter() - t0) * 1000
            assert resp.status_code == 200, (label, resp.status_code, resp.text)
            return took

        for label in samples:  # warm up every path (imports, connection pools, SQLite pages)
            for _ in range(200):
                once(label)
        order = list(samples)
        for _ in range(args.n):
            random.shuffle(order)
            for label in order:
                samples[label].append(once(label))
    # A request without the key is refused by the "on" sides (the bench measured the real gate).
    assert httpx.get(f"http://127.0.0.1:{ports['api on']}/sandboxes").status_code == 401
    assert httpx.get(f"http://127.0.0.1:{ports['proxy on']}/", headers={"Host": "x.local"}).status_code == 401

    rows = {label: summarize(s) for label, s in samples.items()}
    print(table(f"auth on vs off, {args.n} small requests each (ms)", rows))
    sides = [f"{path} {side}" for path in ("api", "proxy") for side in ("before", "on")]
    delta = {label: rows[label]["p50"] - rows[label.split()[0] + " off"]["p50"] for label in sides}
    paired = {label: statistics.median(a - b for a, b in zip(samples[label], samples[label.split()[0] + " off"]))
              for label in sides}
    for label in sides:
        print(f"{label}: auth adds {delta[label] * 1000:+.0f} us at p50, {paired[label] * 1000:+.0f} us "
              "median paired (budget 200 us)")
    # The gate's own work, without HTTP around it: one authenticate() per request.
    db = sqlite3.connect(str(settings.db_path), isolation_level=None)
    store = Door.open(settings, db).store
    header = f"Bearer {key}".encode()
    per_call_us = {}
    for label, ttl, remember in (("token and row cached (as served)", ROW_TTL, True),
                                 ("row cached, hash every call (before)", ROW_TTL, False),
                                 ("row read every call", 0.0, False)):
        auth = Authenticator(store, row_ttl=ttl, remember_tokens=remember)
        t0 = time.perf_counter()
        for _ in range(args.n * 10):
            auth.authenticate(header)
        per_call_us[label] = (time.perf_counter() - t0) / (args.n * 10) * 1e6
        print(f"authenticate() alone, {label}: {per_call_us[label]:.1f} us per call")
    gate_us = asyncio.run(_gate_alone(Authenticator(store), header, args.n * 10))
    print(f"the API's gate (AuthGate) alone around a no-op app: {gate_us:.1f} us per request")
    child.terminate()
    out = write("auth", {"n": args.n, "results": rows, "p50_added_ms": delta, "paired_median_added_ms": paired,
                         "gate_us": gate_us, "authenticate_us": per_call_us,
                         "load_average": os.getloadavg()})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
