"""Each example runs as a user would run it (``python examples/NAME.py``) against the real
server, small sizes, and must succeed, print its timings and its result, and leave no
sandbox behind (every sandbox it made, announced as ``sandbox <id>``, is gone)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cellbox.sdk import SandboxClient, SandboxNotFoundError

ROOT = Path(__file__).resolve().parents[2]
CASES = {
    "code_exec_loop": ([], [r"turn 1: exit 1", r"solved in 2 turns: 84\.67"]),
    "rl_rollouts": (["--group", "3", "--seed", "3"], [r"clone the warm sandbox x3", r"advantage"]),
    "reproducible_env": (["--restores", "2", "--steps", "30"],
                         [r"identical episodes across restores: True", r"fresh boot differs: True"]),
    "agent_swarm": (["--workers", "3", "--limit", "30000"], [r"primes below 30000: 3245 \(local sieve: 3245\)"]),
    "autoresearch": (["--rounds", "2", "--variants", "2"], [r"val mse by round", r"best config"]),
    "mcp_agent": ([], [r"18 tools: create_sandbox", r"stdout '2880067194370816120'", r"truncated=True"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_example(name: str, live_server) -> None:
    args, expected = CASES[name]
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=180, env={**live_server.env(), "PYTHONPATH": str(ROOT / "src")})
    made = re.findall(r"^sandbox ([0-9a-z]{21})$", proc.stdout, re.M)
    with SandboxClient(api_url=live_server.api_url) as client:
        alive = []
        for sid in made:
            try:
                status = client.get(sid).status
            except SandboxNotFoundError:
                continue
            if status not in ("terminated", "failed"):
                alive.append(sid)
                client.delete(sid)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert made, proc.stdout
    for pattern in expected:
        assert re.search(pattern, proc.stdout), (pattern, proc.stdout[-3000:])
    assert re.search(r"^-- .*steps, [\d.]+ s wall$", proc.stdout, re.M), proc.stdout[-2000:]
    assert not alive, f"{name} left sandboxes running: {alive}"
