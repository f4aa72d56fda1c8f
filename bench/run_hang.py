"""Stress ``POST /api/v1/processes/run`` and count requests that never get an answer.

Reproduction of the "run hangs ~2/150 under load" report: many concurrent /run
requests (one TCP connection each, like a curl loop) on one or a few sandboxes, with
optional CPU burners beside them. Each request is bounded by ``--timeout``; one that
receives no byte at all in that time is a *hang*. For a hang the script records
whether the process ran anyway (``GET /api/v1/processes`` on the agent), and with
``--diagnose`` it prints ``ss -tnoi`` for the sockets involved on both sides (host and
sandbox netns) and the sandbox's ARP entry for the gateway beside the bridge's MAC.

Targets: ``--via proxy`` (client → proxy → agent, the reported path) or ``--via agent``
(straight to the agent's address, to tell the proxy apart from the agent).

Starts its own ``cellbox server`` on free ports (no warm pool unless asked) and deletes
the sandboxes it created at the end, also on failure. ``--churn K`` creates and deletes
K sandboxes in a loop meanwhile, as a second benchmark on the same host would.

    PYTHONPATH=src .venv/bin/python bench/run_hang.py --sandboxes 2 -n 300 -c 16 --load 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import auth_headers, wait_for_api, write  # noqa: E402

BURN = "import time\nwhile True:\n    time.time()\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Outcome:
    ok: int = 0
    hung: int = 0  # no byte of a response within the timeout
    cut: int = 0  # some bytes, then nothing (or no end) within the timeout
    errors: int = 0
    hangs: list[dict] = field(default_factory=list)


async def one_run(host: str, port: int, host_header: str, body: bytes, timeout: float) -> tuple[str, dict]:
    """One /run on a fresh connection; returns (kind, details)."""
    t0 = time.perf_counter()
    received = 0
    local = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return "error", {"error": repr(exc)}
    try:
        local = writer.get_extra_info("sockname")[1]
        head = (
            f"POST /api/v1/processes/run HTTP/1.1\r\nHost: {host_header}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nAccept: */*\r\n\r\n"
        ).encode()
        writer.write(head + body)
        await writer.drain()
        buf = b""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    received += len(chunk)
                    buf += chunk
                    if buf.endswith(b"\r\n0\r\n\r\n") or b'"reason"' in buf and buf.endswith(b"0\r\n\r\n"):
                        break
        except TimeoutError:
            kind = "hung" if received == 0 else "cut"
            return kind, {"local_port": local, "received": received, "head": buf[:200].decode(errors="replace"),
                          "elapsed": time.perf_counter() - t0}
        if b" 200 " in buf[:20] and b'"exit_code":0' in buf:
            return "ok", {}
        return "error", {"received": received, "head": buf[:300].decode(errors="replace")}
    except (OSError, ConnectionError) as exc:
        return "error", {"error": repr(exc), "received": received}
    finally:
        writer.transport.abort()


def _ss(argv: list[str], *needles: str) -> None:
    lines = subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()
    for i, line in enumerate(lines):
        if any(n in line for n in needles):
            print("   ", line, file=sys.stderr)
            if i + 1 < len(lines):
                print("   ", lines[i + 1], file=sys.stderr)


def conntrack_invalid() -> int:
    """Packets conntrack judged invalid, summed over CPUs (our nft input chain drops
    those when they come from the bridge)."""
    rows = Path("/proc/net/stat/nf_conntrack").read_text().split("\n")[1:]
    return sum(int(r.split()[4], 16) for r in rows if r.strip())


def diagnose(sid: str, agent_ip: str, local_port: int | None) -> None:
    print(f"--- diagnose: host side, sockets to {agent_ip}:9501 and client port {local_port}", file=sys.stderr)
    _ss(["ss", "-tnoi"], f"{agent_ip}:9501", *([f":{local_port} "] if local_port else []))
    print("--- sandbox side (the agent's sockets)", file=sys.stderr)
    _ss(["ip", "netns", "exec", f"cb-{sid}", "ss", "-tnoi"], ":9501")
    from cellbox.config import load

    settings = load()
    neigh = subprocess.run(["ip", "-n", f"cb-{sid}", "neigh", "show", str(settings.gateway)],
                           capture_output=True, text=True).stdout.strip()
    bridge_mac = Path(f"/sys/class/net/{settings.bridge}/address").read_text().strip()
    print(f"--- sandbox's ARP entry for the gateway: {neigh!r}; the bridge's MAC now: {bridge_mac}", file=sys.stderr)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sandboxes", type=int, default=1)
    ap.add_argument("-n", type=int, default=300, help="requests in all")
    ap.add_argument("-c", type=int, default=16, help="requests in flight at once")
    ap.add_argument("--load", type=int, default=0, help="CPU burner processes beside the test")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--via", choices=("proxy", "agent"), default="proxy")
    ap.add_argument("--command", default="echo hi")
    ap.add_argument("--diagnose", action="store_true")
    ap.add_argument("--churn", type=int, default=0,
                    help="sandboxes created and deleted in a loop meanwhile (like a second benchmark)")
    ap.add_argument("--warm-pool", type=int, default=0, help="server warm pool (sandboxes are claimed from it)")
    ap.add_argument("--private-net", metavar="N", type=int, default=None,
                    help="use a bridge, subnet and nft table of this run's own (cbhang<N>, 10.213.N.0/24), "
                         "removed at the end, so runs of different code start from the same network state")
    ap.add_argument("--label", default="", help="names this run in the results file")
    args = ap.parse_args()

    api_port, proxy_port = free_port(), free_port()
    env = {**os.environ, "CELLBOX_WARM_POOL": str(args.warm_pool)}
    if args.private_net is not None:
        env.update(CELLBOX_BRIDGE=f"cbhang{args.private_net}", CELLBOX_SUBNET=f"10.213.{args.private_net}.0/24",
                   CELLBOX_NFT_TABLE=f"cellbox_hang{args.private_net}")
        os.environ.update({k: env[k] for k in ("CELLBOX_BRIDGE", "CELLBOX_SUBNET", "CELLBOX_NFT_TABLE")})
    log = open("/tmp/cellbox-bench-run-hang-server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-c", "from cellbox.cli.main import main; main()", "server",
         "--api-port", str(api_port), "--proxy-port", str(proxy_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    burners: list[subprocess.Popen] = []
    api = f"http://127.0.0.1:{api_port}"
    sids: list[str] = []
    out = Outcome()
    try:
        async with httpx.AsyncClient(timeout=60, headers=auth_headers()) as client:
            await wait_for_api(client, api, 300)
            boxes = []
            for _ in range(args.sandboxes):
                r = await client.post(f"{api}/sandboxes", json={"resources": {"cpus": 1.0, "memory_mb": 512}})
                r.raise_for_status()
                sid = r.json()["sandbox_id"]
                sids.append(sid)
                boxes.append(sid)
            from cellbox.config import load
            from cellbox.manager.store import Store

            store = Store(load().db_path)
            recs = {sid: store.get(sid) for sid in sids}
            store.close()
            burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.load)]
            cmd = args.command.split()
            body = json.dumps({"command": cmd[0], "args": cmd[1:], "timeout": 30}).encode()
            sem = asyncio.Semaphore(args.c)

            async def one(i: int) -> None:
                sid = boxes[i % len(boxes)]
                rec = recs[sid]
                async with sem:
                    if args.via == "proxy":
                        kind, det = await one_run("127.0.0.1", proxy_port, f"{sid}.local", body, args.timeout)
                    else:
                        kind, det = await one_run(rec.ip, 9501, f"{sid}.local", body, args.timeout)
                if kind == "ok":
                    out.ok += 1
                    return
                det.update(sid=sid, i=i)
                if kind in ("hung", "cut"):
                    setattr(out, kind, getattr(out, kind) + 1)
                    out.hangs.append({"kind": kind, **det})
                    print(f"  {kind}: request {i} on {sid} {det}", time.strftime("%H:%M:%S"), file=sys.stderr)
                    if args.diagnose and out.hung + out.cut <= 2:
                        diagnose(sid, rec.ip, det.get("local_port"))
                else:
                    out.errors += 1
                    print(f"  error: request {i}: {det}", file=sys.stderr)

            stop_churn = asyncio.Event()
            churned = 0

            async def churn() -> None:
                nonlocal churned
                while not stop_churn.is_set():
                    sid = None
                    try:
                        r = await client.post(f"{api}/sandboxes", json={"resources": {"cpus": 1.0, "memory_mb": 256}})
                        sid = r.json().get("sandbox_id")
                        if r.status_code == 200:
                            churned += 1
                        else:
                            print("  churn create failed:", r.status_code, r.text[:300], file=sys.stderr)
                            await asyncio.sleep(1)
                    except httpx.HTTPError as exc:
                        print("  churn create failed:", exc, file=sys.stderr)
                    finally:
                        if sid:
                            await client.delete(f"{api}/sandboxes/{sid}", timeout=60)

            invalid0 = conntrack_invalid()
            churners = [asyncio.ensure_future(churn()) for _ in range(args.churn)]
            t0 = time.perf_counter()
            try:
                await asyncio.gather(*[one(i) for i in range(args.n)])
            finally:
                wall = time.perf_counter() - t0
                stop_churn.set()
                await asyncio.gather(*churners, return_exceptions=True)
            invalid = conntrack_invalid() - invalid0
            for b in burners:
                b.kill()
            # did the hung requests' processes run?  (the agent's own record of them)
            for h in out.hangs:
                rec = recs[h["sid"]]
                r = await client.get(f"http://{rec.ip}:9501/api/v1/processes", timeout=10)
                procs = r.json()["processes"]
                h["agent_processes"] = len(procs)
                h["agent_running"] = sum(p["status"] == "running" for p in procs)
            print(f"via {args.via}: {args.n} requests, c={args.c}, {args.sandboxes} sandbox(es), load {args.load}: "
                  f"ok {out.ok}, hung {out.hung}, cut {out.cut}, errors {out.errors}  ({wall:.1f} s; "
                  f"{churned} sandboxes churned; conntrack invalid +{invalid})")
            write("run_hang", {"args": vars(args), "ok": out.ok, "hung": out.hung, "cut": out.cut,
                               "errors": out.errors, "wall_s": wall, "churned": churned, "conntrack_invalid": invalid, "hangs": out.hangs})
            for sid in sids:
                await client.delete(f"{api}/sandboxes/{sid}", timeout=60)
            sids.clear()
    finally:
        for b in burners:
            b.kill()
            b.wait()
        if sids:  # failed half-way: still delete what we made
            with httpx.Client(timeout=60, headers=auth_headers()) as c:
                for sid in sids:
                    try:
                        c.delete(f"{api}/sandboxes/{sid}")
                    except httpx.HTTPError:
                        pass
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        log.close()
        if args.private_net is not None:
            subprocess.run(["nft", "delete", "table", "inet", env["CELLBOX_NFT_TABLE"]], check=False)
            subprocess.run(["ip", "link", "del", env["CELLBOX_BRIDGE"]], check=False)


if __name__ == "__main__":
    asyncio.run(main())
