"""The web console's numbers: list page server time at 500 sandboxes, live-update
latency, and a keystroke's echo through the console vs ``cellbox ssh``'s path.

1. **List page, 500 records** (in one process's child, on a temporary data dir): 500
   *generated* sandbox records (status running, never booted: the list renders
   records, and the per-row cgroup reads then find no files, so they cost a failed
   ``open`` each instead of a read) in a project of a throwaway database, served by
   the real console app (``create_ui``) under uvicorn. Server time is measured around
   the ASGI app (a ``Server-Timing`` header), for ``GET /ui/sandboxes`` and the
   ``/rows`` fragment. Live latency there: a record inserted into the database by
   this process (as another server or the CLI's would) → its row in the SSE feed.
2. **Live latency, real server**: a real ``cellbox server``; the SDK creates a
   sandbox (``wait=False``) → the row in the console's SSE feed.
3. **Keystroke echo**: one sandbox, two bash PTYs: one through the console's relay
   (``/ui/.../pty/{id}/ws``, cookie + Origin, as a browser), one through the sandbox
   proxy as ``cellbox ssh`` does (the SDK's ``Pty``); the same WebSocket client for
   both; one key, wait for its echo; alternating, so noise hits both alike.

    .venv/bin/python bench/ui.py [--records 500] [-n 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import auth_headers, summarize, table, write  # noqa: E402

from cellbox.auth import keys as keymod  # noqa: E402
from cellbox.auth.keys import Role  # noqa: E402
from cellbox.manager import agent_client  # noqa: E402
from cellbox.manager.records import SandboxRecord, Status  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402
from cellbox.sdk import SandboxClient  # noqa: E402
from cellbox.sdk._shared import ProxyTarget  # noqa: E402
from cellbox.sdk._sync.websocket import WebSocket  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "bench-ui"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_record(i: int) -> SandboxRecord:
    rec = SandboxRecord(id=f"bench{i:016d}", namespace=PROJECT, image="cellbox/debian:latest", cpus=1.0,
                        memory_mb=1024, disk_mb=10240, status=Status.RUNNING, name=f"box-{i}", ip=None)
    rec.extra[agent_client.KEY_FIELD] = secrets.token_hex(32)
    return rec


def serve_console(data_dir: Path, port: int) -> None:
    """Child process: the real console app on a throwaway database."""
    import asyncio

    import uvicorn

    from cellbox.auth.door import Door
    from cellbox.auth.guard import Authenticator
    from cellbox.auth.store import AuthStore
    from cellbox.auth.vault import Vault
    from cellbox.config import Settings
    from cellbox.manager.sandboxes import SandboxManager
    from cellbox.manager.service import SandboxService
    from cellbox.ui import create_ui

    settings = Settings(data_dir=data_dir)
    store = Store(settings.db_path)
    auth_store = AuthStore(store.db)
    door = Door(auth_store, Authenticator(auth_store), Vault(data_dir / "secrets.key"))
    service = SandboxService(SandboxManager(settings, store), proxy_port=0, door=door)
    ui = create_ui(service, door)

    async def timed(scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()

        async def stamp(message: Any) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - started) * 1000
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"server-timing", f"app;dur={ms:.3f}".encode())]}
            await send(message)
        await ui(scope, receive, stamp)

    config = uvicorn.Config(timed, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    asyncio.run(uvicorn.Server(config).serve())


def login(url: str, key: str) -> httpx.Client:
    http = httpx.Client(base_url=url, timeout=60)
    resp = http.post("/ui/login", data={"api_key": key})
    assert resp.status_code == 303, resp.text
    return http


def server_ms(resp: httpx.Response) -> float:
    return float(re.search(r"dur=([\d.]+)", resp.headers["server-timing"]).group(1))  # type: ignore[union-attr]


class Feed:
    """The console's SSE list feed in a thread: when did a row with some id first appear?"""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with self.http.stream("GET", "/ui/sandboxes/events", timeout=None) as resp:
            for line in resp.iter_lines():
                if self.stop:
                    return
                self.ready.set()
                now = time.monotonic()
                for sid in re.findall(r'id="row-([0-9a-z]+)"', line):
                    self.seen.setdefault(sid, now)

    def wait(self, sid: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while sid not in self.seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sid} never appeared in the feed")
            time.sleep(0.002)
        return self.seen[sid]


def bench_list(records: int, n: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cellbox-bench-ui-"))
    store = Store(tmp / "cellbox.db")
    for i in range(records):
        store.insert(fake_record(i))
    from cellbox.auth.store import AuthStore
    key_id, key, key_hash = keymod.new_key()
    AuthStore(store.db).add_key(key_id, key_hash, PROJECT, Role.MEMBER, name="bench")
    port = free_port()
    child = multiprocessing.get_context("spawn").Process(target=serve_console, args=(tmp, port), daemon=True)
    child.start()
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{url}/ui/login", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        http = login(url, key)
        page, rows = [], []
        for _ in range(n):
            page.append(server_ms(http.get("/ui/sandboxes")))
            rows.append(server_ms(http.get("/ui/sandboxes/rows")))
        assert http.get("/ui/sandboxes").text.count('id="row-') == records
        feed = Feed(http)
        feed.ready.wait(10)
        live = []
        for i in range(min(n, 20)):
            rec = fake_record(records + i)
            t0 = time.monotonic()
            store.insert(rec)
            live.append((feed.wait(rec.id) - t0) * 1000)
        feed.stop = True
        return {"list page": summarize(page), "rows fragment": summarize(rows), "live update (db insert)": summarize(live)}
    finally:
        child.terminate()
        child.join(10)
        store.close()


def start_server() -> tuple[subprocess.Popen[bytes], str, Path]:
    api, proxy = free_port(), free_port()
    log = Path(tempfile.gettempdir()) / f"cellbox-bench-ui-{os.getpid()}.log"
    proc = subprocess.Popen([str(ROOT / ".venv/bin/cellbox"), "server", "--host", "127.0.0.1", "--api-port", str(api),
                             "--proxy-port", str(proxy)], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "CELLBOX_WARM_POOL": "0"})
    url = f"http://127.0.0.1:{api}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/sandboxes", headers=auth_headers(), timeout=2).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"server did not start; see {log}")


def echo_once(ws: WebSocket, ch: bytes) -> float:
    t0 = time.perf_counter()
    ws.send(b"\x00" + ch)
    while True:
        msg = ws.recv(timeout=10)
        if msg and msg[0] == 0 and ch in msg[1:]:
            return (time.perf_counter() - t0) * 1000


def drain(ws: WebSocket, quiet: float = 0.3) -> None:
    from cellbox.sdk._errors import WaitTimeout
    try:
        while True:
            ws.recv(timeout=quiet)
    except WaitTimeout:
        pass


def bench_real(n: int) -> dict[str, Any]:
    proc, url, log = start_server()
    admin = httpx.Client(base_url=url, headers=auth_headers(), timeout=120)
    project = f"bench-ui-{secrets.token_hex(3)}"
    made = admin.post("/keys", json={"project": project, "name": "bench/ui.py"}).json()
    key = made["key"]
    sdk = SandboxClient(api_url=url, api_key=key)
    out: dict[str, Any] = {}
    try:
        http = login(url, key)
        feed = Feed(http)
        feed.ready.wait(10)
        live = []
        for _ in range(5):
            t0 = time.monotonic()
            info = sdk.create(wait=False)
            live.append((feed.wait(info.id) - t0) * 1000)
            sdk.delete(info.id)
        feed.stop = True
        out["live update (SDK create, real server)"] = summarize(live)
        out.update(bench_echo(url, http, sdk, n))
    finally:
        for s in sdk.list():
            sdk.delete(s.id)
        sdk.close()
        admin.delete(f"/keys/{made['id']}")
        admin.close()
        proc.terminate()
        proc.wait(60)
    return out


def bench_echo(url: str, http: httpx.Client, sdk: SandboxClient, n: int) -> dict[str, Any]:
    info = sdk.create()
    sbx = sdk.connect(info.id)
    cli = sbx.pty()  # what `cellbox ssh` uses: the SDK's Pty over the sandbox proxy
    resp = http.post(f"/ui/sandboxes/{info.id}/pty", json={"rows": 24, "cols": 80},
                     headers={"X-CSRF-Token": csrf(http)})
    host = url.removeprefix("http://")
    cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    ui = WebSocket.connect(ProxyTarget(url, {"Host": host}), f"/ui/sandboxes/{info.id}/pty/{resp.json()['session_id']}/ws",
                           {"Cookie": cookie, "Origin": url})
    ui.send(b"\x02")
    cli_ws = cli._ws
    drain(ui)
    drain(cli_ws)
    times: dict[str, list[float]] = {"keystroke echo: console relay": [], "keystroke echo: cellbox ssh path": []}
    letters = b"abcdefghijklmnopqrstuvwxyz"
    for i in range(n):
        ch = letters[i % 26:i % 26 + 1]
        pair = [("keystroke echo: console relay", ui), ("keystroke echo: cellbox ssh path", cli_ws)]
        for name, ws in pair if i % 2 == 0 else reversed(pair):
            times[name].append(echo_once(ws, ch))
        if i % 20 == 19:  # keep the line short
            for _, ws in pair:
                ws.send(b"\x00\x15")
            drain(ui, 0.1)
            drain(cli_ws, 0.1)
    ui.close()
    cli.close()
    sbx.close()
    return {name: summarize(v) for name, v in times.items()}


def csrf(http: httpx.Client) -> str:
    page = http.get("/ui/sandboxes").text
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=500)
    ap.add_argument("-n", type=int, default=200, help="requests per list variant; keystrokes per path")
    ap.add_argument("--skip-real", action="store_true", help="only the in-process list part")
    args = ap.parse_args()
    results = bench_list(args.records, min(args.n, 50))
    if not args.skip_real:
        results.update(bench_real(args.n))
    print(table(f"console (ms; list page with {args.records} generated records)", results))
    p50 = {k: v["p50"] for k, v in results.items()}
    if "keystroke echo: console relay" in p50:
        delta = p50["keystroke echo: console relay"] - p50["keystroke echo: cellbox ssh path"]
        print(f"\nkeystroke echo, console minus cellbox ssh path (p50): {delta:+.2f} ms")
    path = write("ui", {"records": args.records, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
