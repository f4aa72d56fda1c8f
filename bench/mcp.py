"""A tool call's round trip through ``cellbox mcp`` vs the same call through the SDK directly.

Side by side in one run, one event loop: the async SDK (a kept sandbox handle, and a
``connect`` + call, which is what each MCP tool does), and the MCP SDK's client
talking to ``cellbox mcp`` over stdio and over streamable HTTP (a
``cellbox mcp --transport http`` started here). Three calls: ``run_command``
(``sh -c 'echo hi'``), ``read_file`` (a 1 KiB file) and ``get_sandbox``. Calls alternate
variant by variant in rounds, so CPU noise from other work on the host hits all alike.
Starts its own ``cellbox server`` on free ports unless ``--api-url`` is given.

    .venv/bin/python bench/mcp.py [-n 200] [--api-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2

# This file is bench/mcp.py: with its folder first on sys.path, "import mcp" would import
# itself. Take the folder off while the MCP SDK is imported, then put it back for _common.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

sys.path.insert(0, str(HERE))
from _common import auth_headers, summarize, table, write  # noqa: E402

from cellbox.credentials import find_api_key  # noqa: E402
from cellbox.sdk import AsyncSandbox, AsyncSandboxClient  # noqa: E402

CELLBOX = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "cellbox"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], log: str, probe: str, headers: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([str(CELLBOX), *args], stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"cellbox {args[0]} exited: see {log}")
        try:
            httpx.get(probe, timeout=2, headers=headers)
            return proc
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"cellbox {args[0]} did not start: see {log}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def check_tool(client: Client, tool: str, args: dict[str, Any]) -> None:
    result = await client.call_tool(tool, args)
    if result.is_error:
        raise RuntimeError(f"{tool}: {result.content}")


async def measure(api_url: str, mcp_url: str, rounds: int) -> dict[str, Any]:
    key = find_api_key()
    sbx = await AsyncSandbox.create(memory_mb=256, api_url=api_url)
    sdk = AsyncSandboxClient(api_url)
    stdio = Client(StdioServerParameters(command=str(CELLBOX), args=["mcp", "--api-url", api_url],
                                         env={"PATH": os.environ.get("PATH", "")}))
    http = Client(streamable_http_client(mcp_url, http_client=httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, timeout=60)))
    try:
        await sbx.write_file("/work/k.txt", "x" * 1024)
        async with stdio, http:
            sid, cmd = sbx.id, ["/bin/sh", "-c", "echo hi"]

            async def sdk_connect(op: Callable[[AsyncSandbox], Awaitable[Any]]) -> Any:
                return await op(await sdk.connect(sid))

            tool_args = {"run_command": {"sandbox_id": sid, "command": "echo hi"},
                         "read_file": {"sandbox_id": sid, "path": "/work/k.txt"}, "get_sandbox": {"sandbox_id": sid}}
            variants: dict[str, Callable[[], Awaitable[Any]]] = {
                "run_command / sdk (kept handle)": lambda: sbx.run(cmd),
                "run_command / sdk (connect + run)": lambda: sdk_connect(lambda s: s.run(cmd)),
                "run_command / mcp stdio": lambda: check_tool(stdio, "run_command", tool_args["run_command"]),
                "run_command / mcp http": lambda: check_tool(http, "run_command", tool_args["run_command"]),
                "read_file / sdk (kept handle)": lambda: sbx.read_file("/work/k.txt"),
                "read_file / sdk (connect + read)": lambda: sdk_connect(lambda s: s.read_file("/work/k.txt")),
                "read_file / mcp stdio": lambda: check_tool(stdio, "read_file", tool_args["read_file"]),
                "read_file / mcp http": lambda: check_tool(http, "read_file", tool_args["read_file"]),
                "get_sandbox / sdk": lambda: sdk.get(sid),
                "get_sandbox / mcp stdio": lambda: check_tool(stdio, "get_sandbox", tool_args["get_sandbox"]),
                "get_sandbox / mcp http": lambda: check_tool(http, "get_sandbox", tool_args["get_sandbox"]),
            }
            samples: dict[str, list[float]] = {k: [] for k in variants}
            failures = dict.fromkeys(variants, 0)
            errors: dict[str, str] = {}
            for fn in variants.values():  # warm every path once
                await fn()
            for _ in range(rounds):
                for name, fn in variants.items():
                    t0 = time.perf_counter()
                    try:
                        await fn()
                    except Exception as exc:
                        failures[name] += 1
                        errors.setdefault(name, f"{type(exc).__name__}: {exc}"[:300])
                        continue
                    samples[name].append((time.perf_counter() - t0) * 1000)
        for name, message in errors.items():  # say why, not just how often
            print(f"first failure of {name}: {message}", file=sys.stderr)
        final = await sdk.get(sbx.id)
        print(f"bench sandbox {sbx.id}: {final.status} {final.termination_reason or ''}", file=sys.stderr)
    finally:
        await sbx.terminate()
        await sbx.close()
        await sdk.close()
    return {k: {**summarize(v, failures[k]), "samples_ms": v, "first_error": errors.get(k)} for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--rounds", type=int, default=200)
    ap.add_argument("--api-url", default=None, help="an existing cellbox server (else one is started)")
    args = ap.parse_args()
    server = mcp_http = None
    try:
        api_url = args.api_url
        if api_url is None:
            api_port, proxy_port = free_port(), free_port()
            api_url = f"http://127.0.0.1:{api_port}"
            server = start(["server", "--api-port", str(api_port), "--proxy-port", str(proxy_port)],
                           "/tmp/cellbox-bench-mcp-server.log", api_url + "/sandboxes", auth_headers())
        mcp_port = free_port()
        mcp_http = start(["mcp", "--transport", "http", "--port", str(mcp_port), "--api-url", api_url],
                         "/tmp/cellbox-bench-mcp-http.log", f"http://127.0.0.1:{mcp_port}/mcp", {})  # a 401 is an answer
        results = asyncio.run(measure(api_url, f"http://127.0.0.1:{mcp_port}/mcp", args.rounds))
    finally:
        stop(mcp_http)
        stop(server)
    print(table(f"tool-call round trip, ms ({args.rounds} rounds, interleaved)", results))
    # The MCP tools reuse a sandbox handle (30 s), so the like-for-like SDK call is the one
    # with a kept handle; "connect + call" is what an SDK user without a handle pays.
    deltas: dict[str, dict[str, float]] = {}
    for op, base in (("run_command", "run_command / sdk (kept handle)"),
                     ("read_file", "read_file / sdk (kept handle)"), ("get_sandbox", "get_sandbox / sdk")):
        for transport in ("stdio", "http"):
            mine = results[f"{op} / mcp {transport}"]
            deltas[f"{op}: mcp {transport} - sdk"] = {
                stat: mine[stat] - results[base][stat] for stat in ("min", "p50")}
    print("overhead of MCP over the SDK doing the same call (ms; min is the least noisy on a busy host):")
    for k, v in deltas.items():
        print(f"  {k:<32} min {v['min']:+7.2f}   p50 {v['p50']:+7.2f}")
    path = write("mcp", {"args": vars(args), "results": results, "overhead_ms": deltas})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
