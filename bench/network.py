"""Network data path: throughput and connection set-up, sandbox vs two plain namespaces.

Issue 5's benchmark. In one run, side by side:

* **throughput**: one TCP stream of ``--mib`` MiB from a sender to a sink that counts
  the bytes (Python ``sendall`` of 1 MiB buffers on both sides, the same script
  everywhere), (a) between two plain network namespaces joined by a veth pair, (b) from
  a sandbox to a host in the test "internet" (sandbox veth → bridge → host forwarding
  with our nft table and NAT → veth), with no policy and with a 1000-entry policy;
* **connection set-up**: ``--connects`` TCP connects (SYN → established, then close)
  to an echo server, with the same three variants;
* **name lookups** from the sandbox through our forwarder: a name no rule mentions
  (relayed as bytes) vs a name in ``allow_out`` (parsed, and its addresses added to the
  sandbox's nft set before the answer is relayed).

All traffic stays on this machine: the "internet" is a namespace on TEST-NET-2
(tests/nettest/internet.py), the plain pair uses TEST-NET-1 addresses.

    .venv/bin/python bench/network.py [--mib 1024] [--rounds 3] [--connects 300]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _common import RESULTS, summarize, write  # noqa: E402

from cellbox.config import load  # noqa: E402
from cellbox.manager.sandboxes import CreateSpec, SandboxManager  # noqa: E402
from cellbox.manager.store import Store  # noqa: E402
from cellbox.network.policy import parse  # noqa: E402
from tests.nettest.internet import ADDRS, DNS, ECHO_PORT, NS, Internet  # noqa: E402
from tests.sse import run_command  # noqa: E402

SINK_PORT = 9100
PLAIN_A, PLAIN_B = "cbbench-a", "cbbench-b"
PLAIN_ADDR_A, PLAIN_ADDR_B = "192.0.2.1", "192.0.2.2"  # TEST-NET-1

SINK = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('0.0.0.0', int(sys.argv[1]))); srv.listen(8)
print('ready', flush=True)
while True:
    c, _ = srv.accept()
    total, buf = 0, bytearray(1 << 20)
    while n := c.recv_into(buf):
        total += n
    c.sendall(str(total).encode()); c.close()
"""

SENDER = """
import json, socket, sys, time
host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = b'x' * (1 << 20)
t0 = time.perf_counter()
s = socket.create_connection((host, port))
for _ in range(mib):
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
got = int(s.recv(64))
dt = time.perf_counter() - t0
assert got == mib << 20, got
print(json.dumps({"seconds": dt, "gbit_s": got * 8 / dt / 1e9}))
"""

CONNECTS = """
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port))
    out.append((time.perf_counter() - t0) * 1e3)
    s.close()
print(json.dumps(out))
"""


LOOKUPS = """
import json, socket, sys, time
name, n = sys.argv[1], int(sys.argv[2])
out = []
for _ in range(n):
    t0 = time.perf_counter()
    socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
    out.append((time.perf_counter() - t0) * 1e3)
print(json.dumps(out))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class PlainPair:
    """Two namespaces joined by one veth pair: the reference data path."""

    def __init__(self) -> None:
        self.close()
        sh("ip", "netns", "add", PLAIN_A)
        sh("ip", "netns", "add", PLAIN_B)
        sh("ip", "link", "add", "cbbench0", "netns", PLAIN_A, "type", "veth", "peer", "name", "cbbench1",
           "netns", PLAIN_B)
        for ns, dev, addr in ((PLAIN_A, "cbbench0", PLAIN_ADDR_A), (PLAIN_B, "cbbench1", PLAIN_ADDR_B)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.sink = start_sink(PLAIN_B)
        self.echo = subprocess.Popen(["ip", "netns", "exec", PLAIN_B, sys.executable, "-c",
                                      _echo_source(), str(ECHO_PORT), PLAIN_ADDR_B])

    def run(self, source: str, *args: str) -> str:
        return subprocess.run(["ip", "netns", "exec", PLAIN_A, sys.executable, "-c", source, *args],
                              check=True, capture_output=True, text=True, timeout=600).stdout

    def close(self) -> None:
        for name in ("sink", "echo"):
            proc = getattr(self, name, None)
            if proc is not None:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "netns", "del", PLAIN_A], capture_output=True)
        subprocess.run(["ip", "netns", "del", PLAIN_B], capture_output=True)


def _echo_source() -> str:
    from tests.nettest import internet

    return internet.ECHO_SERVER


def start_sink(ns: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SINK, str(SINK_PORT)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def in_sandbox(ip: str, source: str, *args: str) -> str:
    with httpx.Client(base_url=f"http://{ip}:9501", timeout=900) as client:
        res = run_command(client, "python3", ["-c", source, *args], timeout=600)
    if res["exit_code"] != 0:
        raise RuntimeError(f"in-sandbox command failed: {res}")
    return res["out"]


def thousand_rules(target: str) -> Any:
    """999 CIDRs that match nothing we send to, plus the target: 1000 allow entries."""
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    nets = [str(ipaddress.IPv4Network((base + i * 16, 28))) for i in range(999)]
    return parse(allow_out=[*nets, target])


def port_checks(settings: Any, sandbox_id: str, *, on: bool) -> None:
    """Take the sandbox's port in or out of the bridge's checked ports (walls.PORTS)."""
    from cellbox import ids
    from cellbox.network import walls

    verb = "add" if on else "delete"
    subprocess.run(["nft", verb, "element", "bridge", settings.nft_table, walls.PORTS,
                    f"{{ {ids.host_veth(sandbox_id)} }}"], check=True)


async def main(args: argparse.Namespace) -> None:
    settings = load()
    mgr = SandboxManager(dataclasses.replace(settings, warm_pool_size=0), Store(settings.db_path))
    await mgr.start()
    workdir = Path(tempfile.mkdtemp(prefix="cbbench-"))
    internet = Internet(workdir)
    mgr.dns_upstreams = [DNS]
    plain = PlainPair()
    inet_sink = start_sink(NS)
    rec = None
    through: dict[str, list[float]] = {}
    connect: dict[str, list[float]] = {}
    lookups: dict[str, list[float]] = {}
    try:
        rec = await mgr.create(CreateSpec(cpus=2, memory_mb=1024))
        assert rec.ip
        target = ADDRS[1]
        variants = {
            "plain netns pair": lambda src, *a: plain.run(src, PLAIN_ADDR_B, *a),
            "sandbox, no policy": lambda src, *a: in_sandbox(rec.ip, src, target, *a),
            # The same port without the bridge's per-port source checks (network/walls.py),
            # to show what they cost in this very run.
            "sandbox, no port checks": lambda src, *a: in_sandbox(rec.ip, src, target, *a),
            "sandbox, 1000 rules": lambda src, *a: in_sandbox(rec.ip, src, target, *a),
        }
        for rnd in range(args.rounds):
            for name, run in variants.items():
                policy = thousand_rules(target) if "1000" in name else None
                await mgr.egress.apply(rec.id, rec.ip, policy)
                unchecked = "no port checks" in name
                if unchecked:
                    port_checks(settings, rec.id, on=False)
                try:
                    out = await asyncio.to_thread(run, SENDER, str(SINK_PORT), str(args.mib))
                    through.setdefault(name, []).append(json.loads(out)["gbit_s"])
                    out = await asyncio.to_thread(run, CONNECTS, str(ECHO_PORT), str(args.connects))
                    connect.setdefault(name, []).extend(json.loads(out))
                finally:
                    if unchecked:
                        port_checks(settings, rec.id, on=True)
            # Lookups: the same kind of name, once unmentioned and once ruled.
            internet.set_zone({"plain.test.example": [target], "ruled.test.example": [target]})
            await mgr.egress.apply(rec.id, rec.ip, parse(allow_out=["ruled.test.example", target]))
            for label, name in (("name without a rule", "plain.test.example"),
                                ("name in allow_out (learned)", "ruled.test.example")):
                out = await asyncio.to_thread(in_sandbox, rec.ip, LOOKUPS, name, str(args.connects))
                lookups.setdefault(label, []).extend(json.loads(out))
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        if rec is not None:
            await mgr.destroy(rec.id)
        inet_sink.kill()
        plain.close()
        mgr.dns_upstreams = None
        internet.close()
        shutil.rmtree(workdir, ignore_errors=True)
        await mgr.stop()

    ref = statistics.median(through["plain netns pair"])
    print(f"\nthroughput, one TCP stream of {args.mib} MiB, {args.rounds} rounds (Gbit/s)")
    print(f"{'variant':<24}{'median':>10}{'min':>10}{'max':>10}{'vs plain':>10}")
    rows = {}
    for name, vals in through.items():
        med = statistics.median(vals)
        rows[name] = {"gbit_s": vals, "median": med, "ratio_vs_plain": med / ref}
        print(f"{name:<24}{med:>10.2f}{min(vals):>10.2f}{max(vals):>10.2f}{med / ref:>10.0%}")
    print(f"\nTCP connection set-up, {args.connects} × {args.rounds} connects (ms)")
    print(f"{'variant':<24}{'p50':>10}{'p95':>10}{'p99':>10}")
    conn_rows = {}
    for name, vals in connect.items():
        st = summarize(vals)
        conn_rows[name] = {**st, "samples_ms": vals}
        print(f"{name:<24}{st['p50']:>10.3f}{st['p95']:>10.3f}{st['p99']:>10.3f}")
    print(f"\nname lookups from the sandbox, {args.connects} × {args.rounds} (ms)")
    print(f"{'variant':<30}{'p50':>10}{'p95':>10}{'p99':>10}")
    lookup_rows = {}
    for name, vals in lookups.items():
        st = summarize(vals)
        lookup_rows[name] = st
        print(f"{name:<30}{st['p50']:>10.3f}{st['p95']:>10.3f}{st['p99']:>10.3f}")
    path = write("network", {"params": vars(args), "throughput": rows,
                             "connect": {k: {kk: vv for kk, vv in v.items() if kk != "samples_ms"}
                                         for k, v in conn_rows.items()},
                             "lookups": lookup_rows})
    print(f"\nwrote {path}")
    plot(rows, conn_rows)


def plot(rows: dict[str, Any], conn_rows: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(rows)
    left.bar(range(len(names)), [rows[n]["median"] for n in names])
    left.set_xticks(range(len(names)), names, rotation=10)
    left.set_ylabel("Gbit/s (median)")
    left.set_title("one TCP stream")
    right.boxplot([conn_rows[n]["samples_ms"] for n in names], showfliers=False)
    right.set_xticks(range(1, len(names) + 1), names, rotation=10)
    right.set_ylabel("ms")
    right.set_title("TCP connect")
    fig.tight_layout()
    out = RESULTS / "network-latest.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB per transfer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connects", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
