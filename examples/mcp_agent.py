"""An agent's side of MCP: the official MCP client starts ``cellbox mcp`` and calls its tools.

This is what an MCP host (Claude Desktop, Cursor, an agent framework) does with the
config in docs/mcp.md: start the server over stdio, list its tools (their JSON schemas
go to the model), then call the tools the model picks. A scripted list of calls stands
in for the model here; with a real one, ``tools`` goes into its prompt and each of its
tool calls becomes ``client.call_tool(name, arguments)``.

    python examples/mcp_agent.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import anyio
from _steps import Steps, die, sandbox_line
from mcp import Client
from mcp.client.stdio import StdioServerParameters

CELLBOX = Path(sys.executable).with_name("cellbox")  # the venv's cellbox, next to its python
# The MCP SDK starts servers with a minimal environment: pass on what finds the server and key.
PASSED_ENV = ("PATH", "HOME", "CELLBOX_API_URL", "CELLBOX_API_KEY", "TENSORLAKE_API_KEY", "CELLBOX_DATA_DIR",
              "SSL_CERT_FILE")


async def agent(steps: Steps) -> None:
    server = StdioServerParameters(command=str(CELLBOX), args=["mcp"], env={
        k: v for k, v in os.environ.items() if k in PASSED_ENV})
    started = time.perf_counter()
    async with Client(server) as client:
        steps.done.append(("start cellbox mcp and initialize", time.perf_counter() - started))
        print(f"   {steps.done[-1][1] * 1000:8.1f} ms  start cellbox mcp and initialize", flush=True)

        async def tool(name: str, **args: object) -> dict:
            with steps(f"tool {name}"):
                result = await client.call_tool(name, args)
            text = "".join(getattr(c, "text", "") for c in result.content)
            if result.is_error:
                die(f"{name}: {text}")
            return json.loads(text)

        with steps("list tools (their schemas go to the model)"):
            tools = (await client.list_tools()).tools
        print(f"   {len(tools)} tools: {', '.join(t.name for t in tools)}")
        sid = None
        try:
            sid = (await tool("create_sandbox", memory_mb=512, allow_internet_access=False))["id"]
            sandbox_line(sid)
            await tool("write_file", sandbox_id=sid, path="/work/fib.py",
                       content="import sys\na, b = 0, 1\nfor _ in range(int(sys.argv[1])): a, b = b, a + b\nprint(a)\n")
            ran = await tool("run_command", sandbox_id=sid, command="python3 /work/fib.py 90")
            print(f"   run_command -> exit {ran['exit_code']}, stdout {ran['stdout']!r}")
            if ran["stdout"] != "2880067194370816120":
                die("wrong answer")
            flood = await tool("run_command", sandbox_id=sid, command="yes", max_output_bytes=2000)
            print(f"   a runaway command: truncated={flood['truncated']}, {len(flood['stdout'])} bytes kept")
        finally:
            if sid is not None:
                await tool("terminate_sandbox", sandbox_id=sid)


def main() -> None:
    steps = Steps("an MCP client driving cellbox mcp over stdio")
    anyio.run(agent, steps)
    steps.summary()


if __name__ == "__main__":
    main()
