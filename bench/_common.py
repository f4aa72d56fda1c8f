"""Shared helpers for benchmarks: statistics, tables, result files and plots.

Every benchmark prints a table, writes ``bench/results/<name>-<UTC time>.json`` and
``<name>-latest.json`` (so two runs can be diffed), and a PNG where a picture helps.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of the values; nan if empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summarize(samples_ms: list[float], failures: int = 0) -> dict[str, Any]:
    n = len(samples_ms) + failures
    return {
        "n": n,
        "ok": len(samples_ms),
        "success_rate": (len(samples_ms) / n) if n else 0.0,
        "min": min(samples_ms) if samples_ms else float("nan"),
        "p50": statistics.median(samples_ms) if samples_ms else float("nan"),
        "p95": percentile(samples_ms, 95),
        "p99": percentile(samples_ms, 99),
        "max": max(samples_ms) if samples_ms else float("nan"),
        "mean": statistics.fmean(samples_ms) if samples_ms else float("nan"),
    }


def table(title: str, rows: dict[str, dict[str, Any]]) -> str:
    cols = ["n", "success_rate", "min", "p50", "p95", "p99", "max"]
    width = max(len(k) for k in rows) + 2
    out = [title, f"{'variant':<{width}}" + "".join(f"{c:>13}" for c in cols)]
    for name, st in rows.items():
        cells = []
        for c in cols:
            v = st[c]
            cells.append(f"{v:>13.0%}" if c == "success_rate" else f"{v:>13.1f}" if isinstance(v, float) else f"{v:>13}")
        out.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(out)


def host_facts() -> dict[str, Any]:
    import os

    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "host": host_facts(), **data}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"{name}-{stamp}.json"
    text = json.dumps(data, indent=1)
    path.write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    return path


def plot_boxes(results: dict[str, Any], out: Path, title: str, xlabel: str, latest: str) -> None:
    """A horizontal box plot of each variant's ``samples_ms`` (log scale), as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; `pip install -e .[bench]`)")
        return
    labels = list(results)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.boxplot([results[k]["samples_ms"] or [0] for k in labels], orientation="horizontal", showfliers=True)
    ax.set_yticks(range(1, len(labels) + 1), labels)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    (out.parent / latest).write_bytes(out.read_bytes())


def auth_headers() -> dict[str, str]:
    """The API key the CLI would use (root on the server's host: admin.key), as a header."""
    from cellbox.credentials import find_api_key

    key = find_api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


async def wait_for_api(client: Any, api: str, tries: int = 300) -> None:
    """Poll ``GET {api}/sandboxes`` until the server answers (0.2 s apart)."""
    import asyncio

    import httpx

    for _ in range(tries):
        try:
            if (await client.get(f"{api}/sandboxes", timeout=2)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)


async def node_v_through_proxy(client: Any, proxy: str, sandbox_id: str) -> bool:
    """Run ``node -v`` in the sandbox through the proxy's ``/run`` SSE; True if it exited 0."""
    run = {"command": "node", "args": ["-v"], "timeout": 30}
    async with client.stream("POST", f"{proxy}/api/v1/processes/run", json=run,
                             headers={"Host": f"{sandbox_id}.local"}, timeout=30) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data:"):
                ev = json.loads(line[5:])
                if "exit_code" in ev or "signal" in ev:
                    return ev.get("exit_code") == 0
    return False
